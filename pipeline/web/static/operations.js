// Discovery's live log and the diagnostics' live tail: polled from the API, written as text.
"use strict";
(function () {
  var run = document.getElementById("discovery-run");
  if (run && run.getAttribute("data-state") === "running") {
    var log = document.getElementById("discovery-log");
    var progress = document.getElementById("discovery-progress");
    var next = parseInt(run.getAttribute("data-next"), 10) || 0;
    var poll = function () {
      window.sunpm.getJSON("/api/discovery?after=" + next).then(function (state) {
        state.lines.forEach(function (line) { log.appendChild(document.createTextNode(line + "\n")); });
        next = state.next;
        progress.textContent = state.scanned + " of " + state.total + " ids";
        if (state.state === "running") { window.setTimeout(poll, 500); } else { window.location.reload(); }
      }).catch(function () { window.setTimeout(poll, 2000); });
    };
    window.setTimeout(poll, 300);
  }
  var tail = document.getElementById("trace-tail");
  if (tail) {
    var select = document.getElementById("tail-interface");
    var refresh = function () {
      window.sunpm.getJSON("/api/traces/tail?interface=" + encodeURIComponent(select.value)).then(function (data) {
        tail.textContent = data.lines.join("\n");
      }).catch(function () {}).then(function () { window.setTimeout(refresh, 2000); });
    };
    select.addEventListener("change", function () { tail.textContent = ""; });
    refresh();
  }
})();
