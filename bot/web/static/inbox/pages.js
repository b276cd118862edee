// The inbox's progressive enhancement: keyboard shortcuts, and live updates by
// server-sent events. Every page and form works without it.
(function () {
  "use strict";
  var page = document.getElementById("page");
  var live = document.getElementById("live");
  var help = document.getElementById("help");
  if (!page) return;

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("[data-row]")); }
  var selected = -1;
  function select(i) {
    var all = rows();
    if (!all.length) return;
    selected = Math.max(0, Math.min(i, all.length - 1));
    all.forEach(function (r, n) { r.classList.toggle("selected", n === selected); });
    var link = all[selected].querySelector("a.open");
    if (link) link.focus();
  }
  function typing(e) {
    var t = e.target;
    return t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
  }

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e)) return;
    var key = e.key;
    if (key === "?") { if (help && help.showModal) help.showModal(); e.preventDefault(); return; }
    if (key === "j") { select(selected + 1); e.preventDefault(); return; }
    if (key === "k") { select(selected - 1); e.preventDefault(); return; }
    if (key === "o" || (key === "Enter" && selected >= 0 && !document.activeElement.closest("form"))) {
      var all = rows();
      var link = selected >= 0 && all[selected] ? all[selected].querySelector("a.open") : null;
      if (link) { window.location.href = link.href; e.preventDefault(); }
      return;
    }
    if (key === "u") { window.location.href = "/inbox"; e.preventDefault(); return; }
    if (key === "a") {
      var approve = document.querySelector('[data-key="approve"]');
      if (approve) { approve.focus(); approve.click(); e.preventDefault(); }
      return;
    }
    if (key === "r") {
      var reason = document.querySelector('[data-key="reject"]');
      if (reason) { reason.focus(); e.preventDefault(); }
    }
  });
  document.querySelectorAll("[data-help]").forEach(function (b) {
    b.addEventListener("click", function () { if (help && help.showModal) help.showModal(); });
  });

  // Live: a decision taken anywhere (Slack, email, the API, another tab) re-reads this
  // page when it shows that request (the waiting list: any request), and says so.
  if (!window.EventSource) return;
  var waitingList = location.pathname === "/inbox";
  var busy = false;
  function shows(id) {
    return waitingList || !!document.querySelector('[data-request="' + CSS.escape(id) + '"]');
  }
  var again = null; // a refresh asked for while one was under way: run after it
  // A page answering a form holds what was typed and what was wrong with it: it is
  // replaced only when the request itself changed (its status, its votes).
  function changed(doc) {
    if (!page.hasAttribute("data-form-answer")) return true;
    return ["#request-status", "#votes"].some(function (s) {
      var now = page.querySelector(s), fresh = doc.querySelector(s);
      return (now && now.textContent) !== (fresh && fresh.textContent);
    });
  }
  function refresh(message) {
    if (busy) { again = message || again || ""; return; }
    busy = true;
    var focused = document.activeElement && document.activeElement.id;
    fetch(page.getAttribute("data-live-url"), { credentials: "same-origin", headers: { "X-Live": "1" } })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("page");
        if (fresh && fresh.innerHTML !== page.innerHTML && changed(doc)) { // unchanged: leave focus be
          page.innerHTML = fresh.innerHTML;
          document.title = doc.title;
          selected = -1;
          if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
        }
        if (message) live.textContent = message;
        page.setAttribute("data-live-read", "yes"); // for tests: a re-read has landed
      })
      .finally(function () {
        busy = false;
        if (again !== null) { var said = again; again = null; refresh(said); }
      });
  }
  // Someone filling in a form (a reason, edited arguments) keeps what they typed: the
  // page is not replaced under them.
  function filling() {
    var active = document.activeElement;
    return !!(active && active.closest && active.closest("form"));
  }
  var source = new EventSource("/inbox/events");
  // The stream follows decisions from now on: re-read what changed since this page was
  // rendered (or since a lost connection), unless the person is filling in a form.
  source.addEventListener("ready", function () {
    if (filling()) return;
    refresh(null);
  });
  source.addEventListener("decided", function (e) {
    var d = JSON.parse(e.data);
    if (!shows(d.request)) return;
    var who = d.by ? " by " + d.by : "";
    var via = d.channel ? " via " + d.channel : "";
    var done = { approve: "approved", reject: "rejected" }[d.outcome] || d.outcome;
    var message = "Request " + d.request + " was " + done + who + via + ".";
    if (filling()) { live.textContent = message; return; } // said, not re-read
    refresh(message);
  });
  // A request opened (or any change to what waits): the waiting list re-reads itself,
  // at most every two seconds, saying nothing (the new row is in the list).
  var lastWaiting = 0;
  var pendingWaiting = null;
  source.addEventListener("waiting", function () {
    if (!waitingList || pendingWaiting) return;
    var wait = Math.max(0, lastWaiting + 2000 - Date.now());
    pendingWaiting = setTimeout(function () {
      pendingWaiting = null;
      lastWaiting = Date.now();
      refresh("");
    }, wait);
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();
