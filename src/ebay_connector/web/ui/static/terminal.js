// The token refresh terminal: live entries, copy all, compare two entries.
"use strict";

const entries = document.getElementById("entries");
if (entries) {
  const live = document.getElementById("live");
  let after = Number(entries.dataset.after || 0);
  const query = entries.dataset.query || "";

  async function poll() {
    try {
      const response = await fetch(`/ui/terminal/entries?after=${after}&${query}`, {
        credentials: "same-origin",
        headers: { Accept: "text/html" },
      });
      if (response.ok) {
        const html = (await response.text()).trim();
        if (html) {
          const box = document.createElement("ol");
          box.innerHTML = html;
          const fresh = Array.from(box.children);
          fresh.reverse().forEach((item) => {
            item.classList.add("new");
            entries.prepend(item);
            wire(item);
          });
          after = Math.max(after, ...fresh.map((item) => Number(item.dataset.id)));
          const empty = document.getElementById("empty");
          if (empty) empty.remove();
        }
        live.textContent = "live";
      } else {
        live.textContent = "live updates paused (" + response.status + ")";
      }
    } catch (error) {
      live.textContent = "live updates paused (offline)";
    }
  }
  setInterval(poll, 2000);

  const compareButton = document.getElementById("compare");
  function picked() {
    return Array.from(entries.querySelectorAll(".pick:checked")).map((box) => box.closest(".entry"));
  }
  function wire(item) {
    const box = item.querySelector(".pick");
    box.addEventListener("click", (event) => event.stopPropagation());
    box.addEventListener("change", () => {
      compareButton.disabled = picked().length !== 2;
    });
  }
  entries.querySelectorAll(".entry").forEach(wire);

  function text(item) {
    const summary = item.querySelector("summary").innerText.replace(/\s+/g, " ").trim();
    // textContent, not innerText: a collapsed <details> has no rendered text.
    const body = item.querySelector("pre").textContent;
    return summary + "\n" + body;
  }

  document.getElementById("copy-all").addEventListener("click", async () => {
    const all = Array.from(entries.querySelectorAll(".entry")).map(text).join("\n\n");
    window.__copied = all;
    try {
      await navigator.clipboard.writeText(all);
      live.textContent = "copied " + entries.querySelectorAll(".entry").length + " entries";
    } catch (error) {
      live.textContent = "copy failed: select the text and copy it by hand";
    }
  });

  compareButton.addEventListener("click", () => {
    const [left, right] = picked();
    const panel = document.getElementById("comparison");
    panel.hidden = false;
    panel.innerHTML = "";
    const leftLines = left.querySelector("pre").textContent.split("\n");
    const rightLines = right.querySelector("pre").textContent.split("\n");
    const sameFp = left.dataset.fingerprint && left.dataset.fingerprint === right.dataset.fingerprint;
    const verdict = document.createElement("p");
    verdict.id = "verdict";
    verdict.className = sameFp ? "same" : "diff";
    verdict.style.gridColumn = "1 / -1";
    verdict.textContent = sameFp
      ? "Same token fingerprint: both sent the same refresh token."
      : "Different token fingerprints: these sent different tokens.";
    panel.appendChild(verdict);
    [[left, leftLines, rightLines], [right, rightLines, leftLines]].forEach(([item, mine, other]) => {
      const pre = document.createElement("pre");
      pre.className = "terminal";
      pre.setAttribute("aria-label", "entry " + item.dataset.id + " (" + item.dataset.trigger + ")");
      mine.forEach((line, index) => {
        const span = document.createElement("span");
        // Request lines are compared; response lines differ by nature (new tokens).
        const differs = line.startsWith(">") && line !== other[index];
        span.className = differs ? "diff" : "";
        span.textContent = line + "\n";
        pre.appendChild(span);
      });
      panel.appendChild(pre);
    });
  });
}
