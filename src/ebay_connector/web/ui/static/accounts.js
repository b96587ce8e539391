// The accounts page keeps itself current, like the terminal: every few seconds it asks for the
// rows and the summary of the view it shows and puts in place what changed. A row holding the
// keyboard focus or an open menu is left alone until the person moves on; the scroll position
// stays; state changes are announced politely, a few names at most.
"use strict";

(() => {
  const rows = document.getElementById("rows");
  const live = document.getElementById("live");
  const changes = document.getElementById("changes");
  if (!rows || !live) return;
  const interval = Number(live.dataset.interval) || 5000;
  const badges = { needs_reconnect: "needs reconnect", failing: "refresh failing", expiring: "expiring soon", healthy: "active" };
  let timer = null;
  let stopped = false;
  let asking = false;

  const busy = (row) => row.contains(document.activeElement) || row.querySelector("details[open]") !== null || row.querySelector("button.busy") !== null;

  function apply(doc) {
    const summary = document.getElementById("summary");
    const fresh = doc.getElementById("summary");
    if (summary && fresh && !summary.contains(document.activeElement) && summary.innerHTML !== fresh.innerHTML) {
      summary.replaceWith(document.importNode(fresh, true));
    }
    const incoming = Array.from(doc.querySelectorAll("#live-rows > tr"));
    const current = new Map(Array.from(rows.querySelectorAll(":scope > tr[data-account]")).map((r) => [r.dataset.account, r]));
    const sameOrder = incoming.length === current.size && incoming.every((r, i) => rows.children[i] && rows.children[i].dataset.account === r.dataset.account);
    const said = [];
    for (const row of incoming) {
      const old = current.get(row.dataset.account);
      if (old && old.dataset.status !== row.dataset.status) {
        said.push(`${row.querySelector(".label").textContent}: ${badges[row.dataset.status] || row.dataset.status}`);
      }
    }
    if (sameOrder) {
      for (const row of incoming) {
        const old = current.get(row.dataset.account);
        if (old.dataset.sig !== row.dataset.sig && !busy(old)) old.replaceWith(document.importNode(row, true));
      }
    } else if (!Array.from(rows.children).some(busy)) {
      // Accounts came or went (or moved): the whole page of rows, at the same scroll position.
      const y = window.scrollY;
      rows.replaceChildren(...incoming.map((r) => document.importNode(r, true)));
      window.scrollTo(0, y);
    }
    if (said.length) {
      changes.textContent = said.length > 3 ? `${said.slice(0, 3).join("; ")}; and ${said.length - 3} more changed` : said.join("; ");
    }
  }

  async function poll() {
    timer = null;
    if (stopped || asking) return;
    if (document.hidden) return; // resumed by visibilitychange
    asking = true;
    try {
      const response = await fetch("/ui/accounts/live" + window.location.search, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (response.status === 401) {
        stopped = true;
        live.textContent = "Live updates paused: your session has ended. ";
        const link = document.createElement("a");
        link.href = "/login";
        link.textContent = "Sign in again";
        live.append(link);
        return; // the finally clause runs, and no next poll is planned
      }
      if (!response.ok) {
        live.textContent = `Live updates paused (the server answered ${response.status}); retrying.`;
      } else {
        apply(new DOMParser().parseFromString(await response.text(), "text/html"));
        live.textContent = "Updates live.";
      }
    } catch (error) {
      live.textContent = "Live updates paused (offline); retrying.";
    } finally {
      asking = false;
    }
    if (stopped) return;
    timer = setTimeout(poll, interval);
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer === null && !stopped) poll();
  });
  timer = setTimeout(poll, interval);
})();
