// errors.js makes JavaScript errors visible on the page instead of only in
// the console: a live view that silently stops updating looks exactly like a
// quiet network, so a failure must say so where the user is looking.
//
// It is a classic script loaded before the modules, so that it also catches
// a module that fails to load or parse.
(function () {
  "use strict";
  var MAX_SHOWN = 5; // keep the banner short if an error repeats every frame
  var shown = [];

  function report(text) {
    var box = document.getElementById("js-error");
    if (!box) return;
    text = String(text).slice(0, 500);
    if (shown.length > 0 && shown[shown.length - 1] === text) return;
    shown.push(text);
    if (shown.length > MAX_SHOWN) shown.shift();
    box.textContent = "JavaScript error (the view may be stale): " + shown.join("\n");
    box.hidden = false;
  }

  window.onerror = function (message, source, line, column, error) {
    var where = source ? " (" + source + ":" + line + ":" + column + ")" : "";
    report((error && error.stack) || String(message) + where);
  };
  window.addEventListener("unhandledrejection", function (event) {
    var reason = event && event.reason;
    report("unhandled rejection: " + ((reason && reason.stack) || reason));
  });
  // Exposed so that code which catches an error to keep going (one bad event
  // must not stop the stream) can still show it.
  window.ustackReportError = report;
})();
