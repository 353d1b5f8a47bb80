// A little progressive help; every page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Print button of the confirmation page.
  document.querySelectorAll("[data-print]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () { window.print(); });
  });
  // "New code": wait before asking again (the server refuses earlier anyway).
  document.querySelectorAll("[data-wait]").forEach(function (button) {
    var left = parseInt(button.getAttribute("data-wait"), 10) || 0;
    if (left <= 0) return;
    var label = button.textContent;
    button.disabled = true;
    var tick = function () {
      if (left <= 0) { button.disabled = false; button.textContent = label; return; }
      button.textContent = label + " (dans " + left + " s)";
      left -= 1;
      window.setTimeout(tick, 1000);
    };
    tick();
  });
  // Take the reader to the list of errors.
  var summary = document.getElementById("erreurs");
  if (summary) summary.focus();
});
