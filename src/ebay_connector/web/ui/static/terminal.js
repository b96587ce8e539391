// The token refresh terminal: live entries, copy all, compare two entries.
"use strict";

const entries = document.getElementById("entries");
if (entries) {
  const live = document.getElementById("live");
  let after = Number(entries.dataset.after || 0);
  const query = entries.dataset.query || "";
  const newer = document.getElementById("newer");
  const loadNewer = document.getElementById("load-newer");
  const older = document.getElementById("older");
  const loadOlder = document.getElementById("load-older");
  let busy = false; // one request at a time: pages arrive in order, none twice

  function adopt(html) {
    const box = document.createElement("ol");
    box.innerHTML = html;
    return Array.from(box.children).filter(
      (item) => !entries.querySelector(`.entry[data-id="${item.dataset.id}"]`)
    );
  }

  function gone(id) {
    const element = document.getElementById(id);
    if (element) element.remove();
  }

  // The page of entries just after `after` (oldest first on the server, newest first in the
  // HTML); the answer says how many newer entries still wait, and the page says so: a burst is
  // never skipped silently. With `peek`, only the count.
  async function fetchNewer(peek) {
    const url = `/ui/terminal/entries?after=${after}&${query}` + (peek ? "&peek=true" : "");
    const response = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
    });
    if (!response.ok) {
      live.textContent = "live updates paused (" + response.status + ")";
      return 0;
    }
    const waiting = Number(response.headers.get("X-Newer-Entries") || 0);
    const fresh = adopt((await response.text()).trim());
    fresh.reverse().forEach((item) => {
      item.classList.add("new");
      entries.prepend(item);
      wire(item);
    });
    if (fresh.length) {
      after = Math.max(after, ...fresh.map((item) => Number(item.dataset.id)));
      gone("empty");
    }
    if (waiting > 0) {
      loadNewer.textContent = `${waiting} more — load`;
      newer.hidden = false;
    } else {
      newer.hidden = true;
    }
    live.textContent = "live";
    return waiting;
  }

  async function poll() {
    if (busy) return;
    busy = true;
    try {
      // While a backlog is announced, the person decides when it comes: only its count moves.
      await fetchNewer(!newer.hidden);
    } catch (error) {
      live.textContent = "live updates paused (offline)";
    } finally {
      busy = false;
    }
  }
  if (entries.dataset.live === "on") setInterval(poll, 2000);

  loadNewer.addEventListener("click", async () => {
    if (busy) return;
    busy = true;
    loadNewer.disabled = true;
    live.textContent = "loading newer entries…";
    try {
      while ((await fetchNewer(false)) > 0) {
        // every waiting page, in order, until caught up
      }
    } catch (error) {
      live.textContent = "live updates paused (offline)";
    } finally {
      loadNewer.disabled = false;
      busy = false;
    }
  });

  if (loadOlder) {
    loadOlder.addEventListener("click", async (event) => {
      event.preventDefault(); // the link works without scripts: a page of its own
      if (busy) return;
      busy = true;
      loadOlder.setAttribute("aria-disabled", "true");
      try {
        const before = loadOlder.dataset.before;
        const response = await fetch(`/ui/terminal/entries?before=${before}&${query}`, {
          credentials: "same-origin",
          headers: { Accept: "text/html" },
        });
        if (!response.ok) {
          live.textContent = "could not load older entries (" + response.status + ")";
          return;
        }
        const more = response.headers.get("X-Older-Entries") === "1";
        const page = adopt((await response.text()).trim());
        page.forEach((item) => {
          entries.append(item);
          wire(item);
        });
        if (page.length) {
          const oldest = Math.min(...page.map((item) => Number(item.dataset.id)));
          loadOlder.dataset.before = String(oldest);
          loadOlder.href = `/terminal?${query}${query ? "&" : ""}before=${oldest}`;
        }
        older.hidden = !more;
        live.textContent = `loaded ${page.length} older entries`;
      } catch (error) {
        live.textContent = "could not load older entries (offline)";
      } finally {
        loadOlder.removeAttribute("aria-disabled");
        busy = false;
      }
    });
  }

  const compareButton = document.getElementById("compare");
  function picked() {
    return Array.from(entries.querySelectorAll(".pick:checked")).map((box) => box.closest(".entry"));
  }
  function wire(item) {
    if (window.ebcLocalTimes) window.ebcLocalTimes(item);
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
