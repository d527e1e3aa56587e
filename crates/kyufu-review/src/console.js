// The review console's one script: keeps the lease on the open case, gives it back when the page
// is left, zooms and rotates the document, and the keyboard shortcuts. The pages work without it
// (forms and links), only slower.
"use strict";
(function () {
  var body = document.body;
  var kind = body.dataset.page;
  var id = body.dataset.case;

  function submit(formId) {
    var f = document.getElementById(formId);
    if (!f) return;
    // A decision ends the lease on the server; anything else leaves it to the pagehide beacon.
    if (formId !== "next-form") leaving = true;
    f.requestSubmit ? f.requestSubmit() : f.submit();
  }

  // Lease: renewed while the case is open, given back on leaving (unless a form decides or takes
  // the next case, which ends it on the server).
  var leaving = false;
  if (kind === "case" && body.dataset.holding === "1") {
    var renew = Math.max(5, Number(body.dataset.renew) || 30) * 1000;
    var status = document.getElementById("lease");
    setInterval(function () {
      fetch("/review/api/cases/" + id + "/lease", { method: "POST", credentials: "same-origin" }).then(function (r) {
        if (r.status === 409) {
          return r.json().then(function (j) {
            status.innerHTML = "";
            var s = document.createElement("span");
            s.className = "held";
            s.textContent = "担当が " + j.holder + " さんに移りました。判定はできません。";
            status.appendChild(s);
            document.querySelectorAll("#approve-form button, #reject-form button").forEach(function (b) { b.disabled = true; });
          });
        }
        if (r.ok) {
          return r.json().then(function (j) {
            var t = new Date(j.lease_until).toLocaleTimeString("ja-JP", { timeZone: "Asia/Tokyo" });
            var s = status.querySelector(".mine");
            if (s) s.textContent = "あなたが担当しています（" + t + " まで。開いている間は自動で延長）";
          });
        }
      }).catch(function () {});
    }, renew);
    document.querySelectorAll("#approve-form, #reject-form").forEach(function (f) { f.addEventListener("submit", function () { leaving = true; }); });
    window.addEventListener("pagehide", function () {
      if (!leaving) navigator.sendBeacon("/review/api/cases/" + id + "/release");
    });
  }

  // Document viewer: zoom steps and quarter turns.
  var img = document.getElementById("doc");
  var zooms = [1, 1.5, 2, 3, 4];
  var z = 0, turn = 0;
  function view() {
    if (!img) return;
    img.style.width = zooms[z] * 100 + "%";
    img.style.transform = "rotate(" + turn * 90 + "deg)";
    var label = document.getElementById("zoom-level");
    if (label) label.textContent = zooms[z] * 100 + "% ・ " + turn * 90 + "°";
    body.dataset.zoom = String(zooms[z]);
    body.dataset.rotation = String(turn * 90);
  }
  function zoomIn(wrap) { z = z + 1 < zooms.length ? z + 1 : (wrap ? 0 : z); view(); }
  function zoomOut() { z = Math.max(0, z - 1); view(); }
  function rotate() { turn = (turn + 1) % 4; view(); }
  var on = function (elId, f) { var e = document.getElementById(elId); if (e) e.addEventListener("click", f); };
  on("zoom-in", function () { zoomIn(false); });
  on("zoom-out", zoomOut);
  on("rotate", rotate);

  var reason = document.getElementById("reason");
  if (reason) {
    reason.addEventListener("keydown", function (e) {
      if (e.key === "Enter") { e.preventDefault(); submit("reject-form"); }
      if (e.key === "Escape") { reason.blur(); }
    });
  }

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
    var t = e.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
    switch (e.key) {
      case "n": submit("next-form"); break;
      case "a": submit("approve-form"); break;
      case "r": if (reason) { e.preventDefault(); reason.focus(); } break;
      case "z": zoomIn(true); break;
      case "Z": zoomOut(); break;
      case "x": rotate(); break;
      case "/": { var q = document.getElementById("q"); if (q) { e.preventDefault(); q.focus(); } break; }
      case "Escape": if (kind === "case") location.href = "/review"; break;
      default: return;
    }
  });
})();
