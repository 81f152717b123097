// sunpm web UI: shared helpers (no inline script anywhere: the CSP allows 'self' only).
"use strict";
window.sunpm = (function () {
  // The session's CSRF token, for API writes from scripts of the pages.
  function csrf() {
    var field = document.querySelector('input[name="csrf"]');
    return field ? field.value : "";
  }
  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(url + ": " + r.status); } return r.json(); });
  }
  function send(method, url, body) {
    return fetch(url, {
      method: method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (r) { return r.json().then(function (data) { return { status: r.status, data: data }; }); });
  }
  // Forms whose submit button asks first (delete, factory reset).
  document.addEventListener("submit", function (ev) {
    var question = ev.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { ev.preventDefault(); }
  });
  // A live value as pages show it (common.reading's rule): 4 decimals from 1 up, 6 significant
  // digits below; integers and texts as they are.
  function reading(value) {
    if (value === null || value === undefined) { return ""; }
    if (typeof value !== "number" || Number.isInteger(value) || !isFinite(value)) { return String(value); }
    return Math.abs(value) >= 1 ? String(parseFloat(value.toFixed(4))) : String(Number(value.toPrecision(6)));
  }
  return { csrf: csrf, getJSON: getJSON, send: send, reading: reading };
})();
