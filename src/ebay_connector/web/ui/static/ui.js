// Small progressive enhancements shared by every page: confirmations and busy buttons.
"use strict";

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
