// mailbridge control plane: a little progressive enhancement. Every page works
// without it; the Content-Security-Policy allows this file and no inline script.
"use strict";
document.addEventListener("click", (event) => {
  const copy = event.target.closest("[data-copy]");
  if (copy) {
    const source = document.getElementById(copy.dataset.copy);
    if (source && navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent.trim()).then(() => {
        copy.classList.add("copied");
        setTimeout(() => copy.classList.remove("copied"), 1500);
      });
    }
  }
  if (event.target.closest("[data-print]")) {
    window.print();
  }
});
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});
// The language switch returns to the page it was used on.
document.querySelectorAll("#lang-en, #lang-de").forEach((link) => {
  link.href = link.getAttribute("href") + "?back=" + encodeURIComponent(location.pathname + location.search);
});
// A customer's connection that is being verified: ask how it stands every few
// seconds and show the result once the check is over.
document.querySelectorAll("[data-connection-poll]").forEach((section) => {
  const url = section.dataset.connectionPoll;
  const poll = (delay) => setTimeout(() => {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((response) => (response.ok ? response.json() : Promise.reject(response.status)))
      .then((status) => {
        const state = status.state;
        if (state === "connecting" || state === "pending") {
          const attempts = document.getElementById("check-attempts");
          if (attempts && status.check) {
            attempts.textContent = status.check.attempts;
          }
          poll(3000);
        } else {
          location.reload();
        }
      })
      .catch(() => poll(15000));
  }, delay);
  poll(3000);
});
