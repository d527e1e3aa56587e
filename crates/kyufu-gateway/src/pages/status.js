// The status page: reads the application id and status token from the URL fragment (never sent to
// the server in the address) or from the lookup form, and shows the steps in plain words.
"use strict";
(function () {
  const M = JSON.parse(document.getElementById("msgs").textContent);
  const out = document.getElementById("result");
  const form = document.getElementById("lookup");
  const STEPS = ["received", "checking", "approved", "coupon_issued"];
  function stepIndex(status) {
    return { received: 0, needs_review: 1, approved: 2, coupon_issued: 3 }[status];
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  async function show(id, token) {
    out.textContent = "";
    let r;
    try {
      r = await fetch("/api/v1/applications/" + encodeURIComponent(id), { headers: { Authorization: "Bearer " + token, Accept: "application/json" } });
    } catch (e) {
      out.appendChild(el("p", "error", M.unavailable));
      return;
    }
    if (r.status === 404 || r.status === 400) { out.appendChild(el("p", "error", M.not_found)); return; }
    if (r.status !== 200) { out.appendChild(el("p", "error", M.unavailable)); return; }
    const v = await r.json();
    form.hidden = true;
    out.appendChild(el("h2", "", M.current + ": " + (M["status_" + v.status] || v.status)));
    if (v.status !== "duplicate" && v.status !== "rejected") {
      const ol = el("ol", "steps");
      const at = stepIndex(v.status);
      STEPS.forEach((s, i) => {
        const label = i === 1 && v.status === "needs_review" ? M.status_needs_review : M[s];
        const li = el("li", i < at || (i === at && s === "coupon_issued") ? "done" : i === at ? "current" : "", label);
        if (i === at) li.setAttribute("aria-current", "step");
        ol.appendChild(li);
      });
      out.appendChild(ol);
    }
    if (v.explanations && v.explanations.length) {
      out.appendChild(el("h3", "", M.reasons));
      const ul = el("ul");
      v.explanations.forEach((x) => ul.appendChild(el("li", "", M.lang === "en" ? x.en : x.ja)));
      out.appendChild(ul);
    }
    if (v.coupon_code) {
      out.appendChild(el("p", "", M.coupon));
      out.appendChild(el("p", "coupon", v.coupon_code));
      const a = el("a", "", M.redeem);
      a.href = M.redemption_url;
      a.rel = "noopener";
      out.appendChild(a);
    }
    const t = new Date(v.updated_at);
    out.appendChild(el("p", "note", M.updated + ": " + t.toLocaleString(M.lang === "en" ? "en-GB" : "ja-JP")));
  }
  function fromHash() {
    const h = new URLSearchParams(location.hash.slice(1));
    return [h.get("id"), h.get("token")];
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const id = document.getElementById("lookup-id").value.trim();
    const token = document.getElementById("lookup-token").value.trim();
    if (id && token) {
      history.replaceState(null, "", "#id=" + encodeURIComponent(id) + "&token=" + encodeURIComponent(token));
      show(id, token);
    }
  });
  function fromLocation() {
    const [id, token] = fromHash();
    if (id && token) show(id, token);
  }
  window.addEventListener("hashchange", fromLocation);
  fromLocation();
})();
