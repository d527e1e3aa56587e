// "Lost your link?": asks intake to send the status links again to the address given in the
// application. The answer is the same whether or not the address is known.
"use strict";
(function () {
  const M = JSON.parse(document.getElementById("msgs").textContent);
  const form = document.getElementById("lost");
  const out = document.getElementById("lost-result");
  const input = document.getElementById("lost-email");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const email = input.value.trim();
    const err = document.getElementById("lost-email-error");
    err.textContent = "";
    input.removeAttribute("aria-invalid");
    if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email)) {
      err.textContent = M.invalid_email;
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    let r;
    try {
      r = await fetch("/api/v1/links", { method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify({ email: email }) });
    } catch (x) {
      out.textContent = M.network;
      return;
    }
    if (r.status === 202) {
      form.hidden = true;
      out.textContent = M.sent;
    } else if (r.status === 422) {
      err.textContent = M.invalid_email;
      input.setAttribute("aria-invalid", "true");
    } else {
      out.textContent = r.status === 429 ? M.too_many_requests : M.network;
    }
  });
})();
