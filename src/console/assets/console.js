// hallgate console: the one script, loaded from the gateway (no inline script).
// A form with data-confirm asks before it is sent.
document.addEventListener("submit", function (e) {
  var msg = e.target.getAttribute("data-confirm");
  if (msg && !window.confirm(msg)) {
    e.preventDefault();
  }
});
// A page showing work in progress (a chain verification) reloads itself each second.
if (document.querySelector("[data-refresh]")) {
  window.setTimeout(function () { window.location.reload(); }, 1000);
}
