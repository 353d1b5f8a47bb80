// The demo telephone (/dev/phone): places a call to the voice menu, speaks its answers with
// the browser's speech synthesis, and sends keys or words back.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var state = { sid: "", url: "", typed: "", listening: false };
  var $ = function (id) { return document.getElementById(id); };
  function speak(text) {
    if (!window.speechSynthesis) return;
    var u = new SpeechSynthesisUtterance(text);
    u.lang = "fr-FR";
    window.speechSynthesis.speak(u);
  }
  function log(who, text) {
    var li = document.createElement("li");
    li.textContent = who + " : " + text;
    $("log").appendChild(li);
  }
  function step(body) {
    body.sid = state.sid;
    body.from = $("from").value;
    body.to = $("to").value;
    body.url = state.url;
    return fetch("/dev/phone/call", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (r) { return r.json(); }).then(function (data) {
      if (data.ended) { log("Appel", "terminé"); state.sid = ""; return; }
      var a = data.answer;
      if (window.speechSynthesis) window.speechSynthesis.cancel();
      a.says.forEach(function (s) { log("Mairie", s); speak(s); });
      state.url = a.action || a.redirect || (a.dial ? a.dial[1] : "");
      state.listening = a.speech;
      $("sms").textContent = "";
      data.sms.forEach(function (m) {
        var li = document.createElement("li");
        li.textContent = m;
        $("sms").appendChild(li);
      });
      if (a.dial) log("Appel", "transfert vers le standard " + a.dial[0]);
      if (a.hangup) { log("Appel", "la mairie a raccroché"); state.sid = ""; }
    });
  }
  $("dial").addEventListener("submit", function (e) {
    e.preventDefault();
    state.sid = "CAdemo" + Date.now();
    state.url = "";
    $("log").textContent = "";
    step({});
  });
  $("hangup").addEventListener("click", function () {
    if (state.sid) step({ hang_up: true });
  });
  document.querySelectorAll(".key").forEach(function (b) {
    b.addEventListener("click", function () {
      state.typed += b.getAttribute("data-key");
      $("typed").textContent = state.typed;
    });
  });
  $("send").addEventListener("click", function () {
    if (!state.sid) return;
    var keys = state.typed.replace(/#$/, "");
    log("Vous", "touches " + state.typed);
    state.typed = "";
    $("typed").textContent = "";
    step({ digits: keys });
  });
  $("silence").addEventListener("click", function () {
    if (!state.sid) return;
    log("Vous", "(silence)");
    var url = state.url;
    if (url.indexOf("silence=1") < 0 && url.indexOf("?") >= 0) state.url = url + "&silence=1";
    step({});
  });
  $("say").addEventListener("click", function () {
    if (!state.sid) return;
    log("Vous", $("speech").value);
    step({ speech: $("speech").value });
    $("speech").value = "";
  });
});
