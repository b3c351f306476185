// hallgate console: the one script, loaded from the gateway (no inline script).
// A form with data-confirm asks before it is sent.
document.addEventListener("submit", function (e) {
  var msg = e.target.getAttribute("data-confirm");
  if (msg && !window.confirm(msg)) {
    e.preventDefault();
  }
});
