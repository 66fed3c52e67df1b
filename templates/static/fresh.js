// Kattila: says when what this page shows is old, and keeps ages current.
// The page is complete without this script; it only adds a warning line
// and turns <time class="age"> into "… ago". An external file, so a strict
// Content-Security-Policy (script-src 'self') allows it.
(function () {
  "use strict";
  var html = document.documentElement;
  var root = html.getAttribute("data-root") || "";
  var staleAfter = Number(html.getAttribute("data-stale-after")) || 180;
  // When the data this page shows is from (unix seconds).
  var asOf = Number(html.getAttribute("data-as-of")) || 0;
  // The newest build of the site we know of.
  var latest = 0;
  var fetched = false;

  var banner = document.createElement("p");
  banner.className = "stale-banner";
  banner.setAttribute("role", "status");
  banner.hidden = true;
  var main = document.querySelector("main");
  if (main) main.insertBefore(banner, main.firstChild);

  function ago(secs) {
    secs = Math.max(0, Math.round(secs));
    if (secs < 10) return "just now";
    if (secs < 90) return secs + " s ago";
    if (secs < 90 * 60) return Math.round(secs / 60) + " min ago";
    if (secs < 36 * 3600) return Math.round(secs / 3600) + " h ago";
    return Math.round(secs / 86400) + " days ago";
  }

  function tick() {
    var now = Date.now() / 1000;
    var ages = document.querySelectorAll("time.age");
    for (var i = 0; i < ages.length; i++) {
      var at = Date.parse(ages[i].getAttribute("datetime")) / 1000;
      if (!isNaN(at)) ages[i].textContent = ago(now - at);
    }
    var text = "";
    if (fetched && now - latest > staleAfter) {
      text = "The dashboard has not been updated for " + ago(now - latest).replace(" ago", "") +
        ": the receiver or sitegen may have stopped, so what it shows may be out of date.";
    } else if (!fetched && asOf && now - asOf > staleAfter) {
      text = "This page shows the fleet as of " + ago(now - asOf) + "; reload it for the current state.";
    } else if (fetched && latest > asOf && now - asOf > staleAfter) {
      text = "This page shows the fleet as of " + ago(now - asOf) +
        "; the dashboard has newer data: reload the page.";
    }
    banner.textContent = text;
    banner.hidden = text === "";
  }

  function refresh(first) {
    // From file:// a fetch is refused (and logged as an error): judge by
    // the page alone.
    if (!window.fetch || location.protocol === "file:") return tick();
    fetch(root + "api/v1/summary.json", { cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (j) {
        if (j && typeof j.generated_at === "number") {
          latest = j.generated_at;
          fetched = true;
          // What was loaded is as fresh as the build the server had then.
          if (first) asOf = Math.max(asOf, latest);
        }
        tick();
      })
      .catch(function () { tick(); });
  }

  refresh(true);
  setInterval(function () { refresh(false); }, 30000);
  setInterval(tick, 5000);
})();
