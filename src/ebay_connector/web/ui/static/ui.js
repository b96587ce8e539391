// Small progressive enhancements shared by every page: confirmations, busy buttons, and times
// in the reader's time zone.
"use strict";

// The server writes every moment in UTC and says so; here it becomes the reader's own time,
// in the same shape (YYYY-MM-DD HH:MM:SS), with UTC kept on hover (the title).
function ebcLocalTimes(root) {
  const two = (n) => String(n).padStart(2, "0");
  root.querySelectorAll("time[data-utc]").forEach((element) => {
    const moment = new Date(element.getAttribute("datetime"));
    if (Number.isNaN(moment.getTime())) return;
    element.textContent =
      `${moment.getFullYear()}-${two(moment.getMonth() + 1)}-${two(moment.getDate())} ` +
      `${two(moment.getHours())}:${two(moment.getMinutes())}:${two(moment.getSeconds())}`;
    element.removeAttribute("data-utc");
    element.dataset.local = "";
  });
}
window.ebcLocalTimes = ebcLocalTimes;
ebcLocalTimes(document);
document.querySelectorAll("[data-tz-note]").forEach((note) => {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "your time zone";
  note.textContent = `Times are in your time zone (${zone}); hover over a time for UTC.`;
});

// No inline handlers: the content security policy allows scripts from these files only.
document.querySelectorAll("form[data-confirm]").forEach((form) => {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
});

// A form whose work takes eBay seconds says so: its button is disabled and shows a spinner
// until the next page arrives (a second click would send a second request).
document.querySelectorAll("form[method=post]").forEach((form) => {
  form.addEventListener("submit", (event) => {
    if (event.defaultPrevented) return;
    const button = event.submitter || form.querySelector("button[type=submit]");
    if (!button) return;
    // Disabled after this turn, so the button's own name/value still goes with the form.
    setTimeout(() => {
      button.disabled = true;
      button.classList.add("busy");
      button.setAttribute("aria-busy", "true");
    }, 0);
  });
});
// Back/forward cache: a page shown again must not keep its buttons disabled.
window.addEventListener("pageshow", () => {
  document.querySelectorAll("button.busy").forEach((button) => {
    button.disabled = false;
    button.classList.remove("busy");
    button.removeAttribute("aria-busy");
  });
});
