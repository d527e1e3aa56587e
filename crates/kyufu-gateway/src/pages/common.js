// Shared by the citizen pages: the funnel reporter (step names only, no personal data) and the
// receipts of sent applications (kept in this browser so the completion page survives a reload).
"use strict";
window.kyufu = {
  lang: document.documentElement.lang === "en" ? "en" : "ja",
  funnel(step, errorCode) {
    const body = { step: step, lang: this.lang };
    if (errorCode) body.error_code = errorCode;
    const data = JSON.stringify(body);
    try {
      if (navigator.sendBeacon && navigator.sendBeacon("/api/v1/funnel", data)) return;
    } catch (e) { /* fall through */ }
    fetch("/api/v1/funnel", { method: "POST", body: data, keepalive: true }).catch(() => {});
  },
  once(step) {
    const k = "kyufu-funnel-" + step;
    try { if (sessionStorage.getItem(k)) return; sessionStorage.setItem(k, "1"); } catch (e) { /* private mode */ }
    this.funnel(step);
  },
  // Receipts: what the completion page shows for each application sent from this browser.
  // Kept in localStorage (the reference, the code, the status link and the name typed).
  RECEIPTS: "kyufu-receipts",
  receipts() {
    try { return JSON.parse(localStorage.getItem(this.RECEIPTS) || "[]"); } catch (e) { return []; }
  },
  saveReceipt(r) {
    const all = this.receipts().filter((x) => x.id !== r.id);
    all.push(r);
    try { localStorage.setItem(this.RECEIPTS, JSON.stringify(all)); } catch (e) { /* private mode: the page still shows it */ }
  },
  clearReceipts() {
    try { localStorage.removeItem(this.RECEIPTS); } catch (e) { /* nothing kept */ }
  },
  // One list item per receipt: who, the reference and the code to type, the status link.
  receiptItem(r, M) {
    const li = document.createElement("li");
    const who = document.createElement("strong");
    who.textContent = r.who;
    li.appendChild(who);
    const dl = document.createElement("dl");
    dl.className = "receipt";
    [[M.reference, r.reference || r.id], [M.lookup_code, r.code]].forEach(([k, v]) => {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd");
      const c = document.createElement("code"); c.textContent = v; c.className = "typeable";
      dd.appendChild(c);
      dl.append(dt, dd);
    });
    const a = document.createElement("a");
    a.href = "/status#id=" + encodeURIComponent(r.id) + "&token=" + encodeURIComponent(r.token);
    a.textContent = M.status_link;
    li.append(dl, a);
    return li;
  },
};
