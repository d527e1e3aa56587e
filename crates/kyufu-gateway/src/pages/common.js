// Shared by the citizen pages: the funnel reporter (step names only, no personal data).
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
};
