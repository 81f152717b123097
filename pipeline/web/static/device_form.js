// The device form: an uploaded definition file names the row's defFile.
"use strict";
(function () {
  var upload = document.getElementById("f-defUpload");
  var select = document.getElementById("f-defFile");
  if (!upload || !select) { return; }
  upload.addEventListener("change", function () {
    if (!upload.files.length) { return; }
    var name = upload.files[0].name;
    var option = Array.prototype.find.call(select.options, function (o) { return o.value === name; });
    if (!option) {
      option = document.createElement("option");
      option.value = name;
      option.textContent = name + " (uploaded)";
      select.appendChild(option);
    }
    select.value = name;
  });
})();
