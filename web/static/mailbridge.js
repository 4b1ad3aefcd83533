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
// The language switch returns to the page it was used on; a page that is the
// answer to a form (an error after a form) names the page to return to instead.
document.querySelectorAll("#lang-en, #lang-de").forEach((link) => {
  const named = document.querySelector("[data-lang-back]");
  const back = named ? named.dataset.langBack : location.pathname + location.search;
  link.href = link.getAttribute("href") + "?back=" + encodeURIComponent(back);
});
// What was typed into a form survives an error page: kept in this tab's session
// storage when the form is sent (never passwords or tokens), filled in again when
// the error page's way back leads to the same form.
const FORM_KEY = "mailbridge-form";
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (event.defaultPrevented || form.method !== "post") {
    return;
  }
  const fields = [];
  for (const field of form.elements) {
    if (!field.name || field.name === "csrf" || ["password", "hidden", "file", "submit"].includes(field.type)) {
      continue;
    }
    const value = field.type === "checkbox" || field.type === "radio" ? field.checked : field.value;
    fields.push([field.name, field.type, field.value, value]);
  }
  try {
    sessionStorage.setItem(FORM_KEY, JSON.stringify({ page: location.pathname, action: form.getAttribute("action"), fields }));
  } catch (e) { /* storage full or off: nothing kept */ }
});
document.addEventListener("click", (event) => {
  if (event.target.closest("[data-restore-form]")) {
    try { sessionStorage.setItem(FORM_KEY + "-restore", "1"); } catch (e) { /* nothing kept */ }
  }
});
(() => {
  let saved;
  try {
    if (sessionStorage.getItem(FORM_KEY + "-restore") !== "1") {
      return;
    }
    sessionStorage.removeItem(FORM_KEY + "-restore");
    saved = JSON.parse(sessionStorage.getItem(FORM_KEY) || "null");
  } catch (e) {
    return;
  }
  if (!saved || saved.page !== location.pathname) {
    return;
  }
  const form = [...document.querySelectorAll("form[method=post]")].find((f) => f.getAttribute("action") === saved.action);
  if (!form) {
    return;
  }
  for (const [name, type, own, value] of saved.fields) {
    const matches = [...form.elements].filter((f) => f.name === name);
    for (const field of matches) {
      if (type === "checkbox" || type === "radio") {
        if (field.value === own) {
          field.checked = value;
        }
      } else if (matches.length === 1) {
        field.value = value;
      }
    }
  }
  const first = form.querySelector("input:not([type=hidden]), select, textarea");
  if (first) {
    first.focus();
  }
  form.scrollIntoView({ block: "center" });
})();
// Times in the viewer's time zone (the page carries UTC): relative in tables,
// where a list is scanned ("3 min ago"), the full local time elsewhere; UTC on hover.
(() => {
  const lang = document.documentElement.lang || "en";
  const absolute = new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "medium" });
  const zone = new Intl.DateTimeFormat(lang, { timeZoneName: "short" });
  const relative = new Intl.RelativeTimeFormat(lang, { numeric: "auto", style: "short" });
  const units = [["second", 60], ["minute", 60], ["hour", 24], ["day", 7], ["week", Infinity]];
  const describe = (date) => {
    let amount = (date.getTime() - Date.now()) / 1000;
    if (Math.abs(amount) > 30 * 86400) {
      return null;
    }
    for (const [unit, size] of units) {
      if (Math.abs(amount) < size) {
        return relative.format(Math.round(amount), unit);
      }
      amount /= size;
    }
    return null;
  };
  document.querySelectorAll("time[datetime]").forEach((time) => {
    const date = new Date(time.getAttribute("datetime"));
    if (Number.isNaN(date.getTime())) {
      return;
    }
    const utc = time.getAttribute("title") || time.textContent;
    const local = absolute.format(date);
    const zoneName = (zone.formatToParts(date).find((p) => p.type === "timeZoneName") || {}).value || "";
    const scanned = time.closest("td") ? describe(date) : null;
    time.textContent = scanned || local + (zoneName ? " " + zoneName : "");
    time.title = (scanned ? local + " " + zoneName + " · " : "") + utc;
    time.dataset.local = "1";
  });
})();
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
// A message on its way: look at its page again every few seconds and show it anew
// once its state or its attempts changed (no timed reload of an unchanged page,
// which would move a reader's focus and scroll position for nothing).
document.querySelectorAll("[data-message-poll]").forEach((marker) => {
  const shown = marker.dataset.messagePoll;
  const poll = (delay) => setTimeout(() => {
    fetch(location.href, { credentials: "same-origin" })
      .then((response) => (response.ok ? response.text() : Promise.reject(response.status)))
      .then((html) => {
        const page = new DOMParser().parseFromString(html, "text/html");
        const now = page.querySelector("[data-message-poll]");
        if (now && now.dataset.messagePoll === shown) {
          poll(2000);
        } else {
          location.reload();
        }
      })
      .catch(() => poll(15000));
  }, delay);
  poll(2000);
});
