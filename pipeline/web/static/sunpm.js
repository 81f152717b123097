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
  return { csrf: csrf, getJSON: getJSON, send: send };
})();
