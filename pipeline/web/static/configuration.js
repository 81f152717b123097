// The Configuration page: the time zone field's suggestions, fetched once (600 names).
"use strict";
(function () {
  var list = document.getElementById("time-zones");
  if (!list) { return; }
  sunpm.getJSON("/api/timezones").then(function (data) {
    data.timeZones.forEach(function (zone) {
      var option = document.createElement("option");
      option.value = zone;
      list.appendChild(option);
    });
  }).catch(function () {});
})();
