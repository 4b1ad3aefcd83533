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
