// The waiting room, live: polls /queue/status at the advertised interval (the meta refresh in <noscript>
// is the fallback without JavaScript), updates the numbers, and opens the form when admitted.
"use strict";
(function () {
  const box = document.getElementById("queue");
  if (!box) return;
  kyufu.once("queue_joined");
  const strings = document.getElementById("wait-strings").dataset;
  let every = Math.max(1, Number(box.dataset.refresh) || 5);
  const pad = (n) => String(n).padStart(2, "0");
  function eta(s) {
    if (s === null || s === undefined) return strings.unknown;
    if (s < 60) return strings.soon;
    return strings.min.replace("{n}", Math.ceil(s / 60));
  }
  const positionEl = document.getElementById("position");
  let shown = (positionEl && Number(positionEl.textContent)) || Infinity;
  async function poll() {
    try {
      const r = await fetch("/queue/status", { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (r.status === 200) {
        const v = await r.json();
        // A pause or an operator's message set (or lifted) since this page was made: the page
        // shows it in the visitor's language, so load it again.
        if (v.state !== "admitted" && (v.message || "") !== (box.dataset.notice || "")) {
          location.reload();
          return;
        }
        if (v.state === "admitted") {
          kyufu.once("admitted");
          location.assign("/apply");
          return;
        }
        // The pre-queue was drawn: the server renders the page with the place.
        if (box.dataset.prequeue && !v.opens_at) {
          location.reload();
          return;
        }
        if (box.dataset.prequeue) {
          every = Math.max(1, v.refresh_after_seconds || every);
          setTimeout(poll, every * 1000);
          return;
        }
        // Never show the place going backwards, even if an answer arrives out of order.
        if (v.position <= shown) {
          shown = v.position;
          document.getElementById("position").textContent = v.position;
          document.getElementById("eta").textContent = eta(v.eta_seconds);
        }
        const d = new Date();
        document.getElementById("updated").textContent = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
        every = Math.max(1, v.refresh_after_seconds || every);
      } else if (r.status === 400 || r.status === 401 || r.status === 403) {
        location.assign("/"); // the ticket is no longer valid: start again
        return;
      }
    } catch (e) { /* offline for a moment: keep the place, try again */ }
    setTimeout(poll, every * 1000);
  }
  setTimeout(poll, every * 1000);
})();
