// The device page: live values every 5 s, a uPlot chart per variable from the store.
"use strict";
(function () {
  var table = document.getElementById("values");
  if (!table) { return; }
  var device = table.getAttribute("data-device");
  var base = "/api/devices/" + encodeURIComponent(device);

  function text(cell, value) { cell.textContent = value === null || value === undefined ? "" : String(value); }

  function refreshValues() {
    sunpm.getJSON(base + "/values").then(function (data) {
      text(document.getElementById("values-time"), data.time);
      text(document.getElementById("values-age"), data.ageS === null ? "" : "(" + data.ageS + " s old)");
      var body = table.tBodies[0];
      var rows = {};
      Array.prototype.forEach.call(body.rows, function (row) { rows[row.getAttribute("data-var")] = row; });
      data.values.forEach(function (v) {
        var row = rows[String(v.index)];
        if (!row) {
          var empty = body.querySelector("tr.empty");
          if (empty) { empty.remove(); }
          row = body.insertRow(-1);
          row.setAttribute("data-var", String(v.index));
          for (var i = 0; i < 5; i++) { row.insertCell(-1); }
          text(row.cells[0], v.index); text(row.cells[1], v.name); text(row.cells[3], v.unit);
          row.cells[2].className = "value";
        }
        text(row.cells[2], sunpm.reading(v.value));
        text(row.cells[4], v.quality);
        row.cells[4].className = v.good ? "good" : "bad";
      });
    }).catch(function () { /* the next refresh tries again */ });
  }
  setInterval(refreshValues, 5000);

  // uPlot's default 50 px y axis clips wide tick labels ("9,580" of 32,709,580 Wh): the axis
  // is as wide as its longest label. uPlot asks again after a width change, whose ticks may
  // be other labels (32,727,445 then 32,727,442.5): a later answer never shrinks the axis, so
  // the sizes settle and the labels of the last cycle fit.
  function axisSize(u, values, axisIndex, cycle) {
    var axis = u.axes[axisIndex];
    u.ctx.font = axis.font[0];
    var widest = (values || []).reduce(function (a, v) { return Math.max(a, u.ctx.measureText(String(v)).width); }, 0);
    var size = Math.ceil(axis.ticks.size + axis.gap + widest / devicePixelRatio) + 4;
    return cycle > 1 ? Math.max(axis._size || 0, size) : size;
  }

  var charts = [];
  function draw(figure, span) {
    var old = figure.querySelector(".uplot, .empty");
    var url = base + "/history?var=" + encodeURIComponent(figure.getAttribute("data-var")) + "&span=" + span;
    sunpm.getJSON(url).then(function (data) {
      if (old) { old.remove(); }
      if (!data.x.length) {
        var empty = document.createElement("div");
        empty.className = "empty";
        empty.textContent = "No record in this span yet.";
        figure.appendChild(empty);
        return;
      }
      var unit = figure.getAttribute("data-unit");
      var opts = {
        width: Math.max(300, figure.clientWidth - 10), height: 180,
        legend: { show: true },
        scales: { x: { time: true, range: [data.start, data.end] } },
        axes: [{}, { size: axisSize }],
        series: [
          {},
          { label: "mean", stroke: "#b85c00", width: 1.5, value: function (u, v) { return v === null ? "" : v + " " + unit; } },
          { label: "min", stroke: "#7ea6c9", width: 1 },
          { label: "max", stroke: "#c97e7e", width: 1 }
        ]
      };
      var chart = new uPlot(opts, [data.x, data.mean, data.min, data.max], figure);
      figure.uplot = chart;
      charts.push(chart);
    }).catch(function () {});
  }
  function drawAll(span) {
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    document.querySelectorAll("figure.chart").forEach(function (figure) { draw(figure, span); });
  }
  document.querySelectorAll("#spans button").forEach(function (button) {
    button.addEventListener("click", function () {
      document.querySelectorAll("#spans button").forEach(function (b) { b.classList.remove("active"); });
      button.classList.add("active");
      drawAll(button.getAttribute("data-span"));
    });
  });
  drawAll("1h");
})();
