// A little progressive help; every page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Print button of the confirmation page.
  document.querySelectorAll("[data-print]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () { window.print(); });
  });
  // A second tap on a slow phone must not hold a second slot: one submission per form.
  document.querySelectorAll("form[method=post]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.getAttribute("data-sent")) { event.preventDefault(); return; }
      form.setAttribute("data-sent", "1");
    });
  });
  // Back to a page kept in the browser's memory: its forms may be sent again.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-sent]").forEach(function (form) {
      form.removeAttribute("data-sent");
    });
  });
  // Take the reader to the list of errors.
  var summary = document.getElementById("erreurs");
  if (summary) summary.focus();
});
