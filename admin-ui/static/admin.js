// Refreshes the dashboard in place every data-refresh seconds (without JavaScript, the page
// reloads itself through a <noscript> meta refresh). Stops when the session has ended.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var seconds = main && Number(main.getAttribute("data-refresh"));
  if (!seconds) return;
  function refresh() {
    fetch(window.location.href, { credentials: "same-origin", redirect: "manual" })
      .then(function (response) {
        if (response.type === "opaqueredirect" || !response.ok) throw new Error("session ended");
        return response.text();
      })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        if (next) main.innerHTML = next.innerHTML;
        window.setTimeout(refresh, seconds * 1000);
      })
      .catch(function () { window.location.reload(); });
  }
  window.setTimeout(refresh, seconds * 1000);
})();
