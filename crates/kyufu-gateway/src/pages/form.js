// The application form: guardian once, one block per child, a check step, then one application
// per child through the JSON API (the admission pass travels in its cookie). The server is the
// judge: its field errors are shown next to the fields, in the page's language.
"use strict";
(function () {
  const form = document.getElementById("apply");
  if (!form) return;
  const M = JSON.parse(document.getElementById("msgs").textContent);
  const children = document.getElementById("children");
  const template = children.querySelector("[data-child]").cloneNode(true);
  const MAX_BYTES = 10 * 1024 * 1024;
  const TYPES = ["image/jpeg", "image/png", "application/pdf"];
  const PERSON = ["family_name", "given_name", "family_name_kana", "given_name_kana", "birth_date", "resident_id"];
  const GUARDIAN = PERSON.concat(["postal_code", "email", "phone"]);
  let childSeq = 0;
  kyufu.once("form_started");

  // Gives a child block its own ids ("c3.given_name"), so labels and errors stay tied to fields.
  function number(block) {
    const n = childSeq++;
    block.dataset.n = n;
    block.querySelectorAll("[id]").forEach((el) => { el.id = el.id.replace(/^(child|c\d+)\./, "c" + n + "."); });
    block.querySelectorAll("[for]").forEach((el) => { el.htmlFor = el.htmlFor.replace(/^(child|c\d+)\./, "c" + n + "."); });
    block.querySelectorAll("[aria-describedby]").forEach((el) => {
      el.setAttribute("aria-describedby", el.getAttribute("aria-describedby").replace(/(child|c\d+)\./g, "c" + n + "."));
    });
    block.querySelectorAll("input").forEach((el) => { el.name = el.id; });
    wire(block);
    retitle();
    return block;
  }
  function retitle() {
    const blocks = children.querySelectorAll("[data-child]");
    blocks.forEach((b, i) => {
      b.querySelector("[data-child-title]").textContent = isMother() ? M.document_block : M.child + " " + (i + 1);
      b.querySelector("[data-remove]").hidden = blocks.length < 2 || isMother();
    });
  }
  const $ = (id) => document.getElementById(id);
  const val = (id) => ($(id) ? $(id).value.trim() : "");

  function wire(block) {
    const file = block.querySelector("input[type=file]");
    file.addEventListener("change", () => { forgetPrepared(block); checkFile(block); });
    block.querySelector("[data-remove]").addEventListener("click", () => {
      block.remove();
      retitle();
      children.querySelector("input").focus();
    });
  }
  function checkFile(block) {
    const input = block.querySelector("input[type=file]");
    const img = block.querySelector("img.preview");
    const f = input.files && input.files[0];
    setError(input, "");
    img.hidden = true;
    if (!f) return false;
    kyufu.funnel("upload_started");
    let code = "";
    if (f.size === 0) code = "empty_document";
    else if (f.size > MAX_BYTES) code = "document_too_large";
    else if (f.type && !TYPES.includes(f.type)) code = "unsupported_document_type";
    if (code) {
      setError(input, M[code]);
      kyufu.funnel("error", code);
      return false;
    }
    if (f.type.startsWith("image/")) {
      img.src = URL.createObjectURL(f);
      img.hidden = false;
    }
    kyufu.funnel("upload_done");
    return true;
  }
  function setError(input, text) {
    const err = $(input.id + "-error");
    if (err) err.textContent = text || "";
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  // Light checks in the browser; the server checks everything again.
  // Hiragana, katakana, and half-width katakana (ｶﾀｶﾅ, which the server folds to full width).
  const KANA = /^[\u3041-\u3096\u30A1-\u30FA\u30FC\u3000\uFF65-\uFF9F ・ー]+$/;
  function check(id, kind) {
    const el = $(id);
    if (!el) return true;
    const v = el.value.trim();
    const optional = /resident_id$/.test(id);
    let code = "";
    if (!v) code = optional ? "" : "required";
    else if (/_kana$/.test(id) && !KANA.test(v)) code = "must_be_kana";
    else if (kind === "email" && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(v)) code = "invalid_email";
    else if (kind === "date" && new Date(v) > new Date()) code = "in_future";
    else if (/postal_code$/.test(id) && v.normalize("NFKC").replace(/[-ー−‐\s〒]/g, "").length !== 7) code = "invalid_postal_code";
    else if (/resident_id$/.test(id) && !/^\d{11}$/.test(v.normalize("NFKC"))) code = "invalid_resident_id";
    setError(el, code ? M[code] : "");
    return !code;
  }
  function validate() {
    let ok = true;
    GUARDIAN.forEach((f) => { ok = check("guardian." + f, $("guardian." + f) && $("guardian." + f).type) && ok; });
    if (isMother()) ok = checkDeliveryDate() && ok;
    activeBlocks().forEach((b) => {
      if (!isMother()) PERSON.forEach((f) => { ok = check("c" + b.dataset.n + "." + f, "") && ok; });
      if (!isMother()) ok = checkChildAge($("c" + b.dataset.n + ".birth_date")) && ok;
      const file = b.querySelector("input[type=file]");
      if (!file.files || !file.files[0]) { setError(file, M.document_missing); ok = false; }
      else if (!checkFile(b)) ok = false;
    });
    const consent = $("consent");
    setError(consent, consent.checked ? "" : M.consent_required);
    return ok && consent.checked;
  }
  function summary(text) {
    const box = $("form-errors");
    box.textContent = text || "";
    box.hidden = !text;
    if (text) {
      errorLinks(box);
      box.focus();
    }
  }
  // The summary lists each error with a link to its field (label: message).
  function errorLinks(box) {
    const ul = document.createElement("ul");
    form.querySelectorAll("[aria-invalid=true]").forEach((el) => {
      if (el.closest("[hidden]")) return;
      const label = form.querySelector(`label[for="${CSS.escape(el.id)}"]`);
      const err = $(el.id + "-error");
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = "#" + el.id;
      a.textContent = (label ? label.textContent : el.id) + ": " + (err ? err.textContent : "");
      a.addEventListener("click", (e) => { e.preventDefault(); el.focus(); });
      li.appendChild(a);
      ul.appendChild(li);
    });
    if (ul.children.length) box.appendChild(ul);
  }

  $("add-child").addEventListener("click", () => {
    const block = number(template.cloneNode(true));
    children.appendChild(block);
    retitle();
    // Brothers and sisters usually share the family name: fill it in, still editable.
    const n = block.dataset.n;
    $("c" + n + ".family_name").value = val("guardian.family_name");
    $("c" + n + ".family_name_kana").value = val("guardian.family_name_kana");
    $("c" + n + ".given_name").focus();
  });
  document.querySelector("fieldset").addEventListener("focusout", () => {
    if (GUARDIAN.every((f) => /resident_id$/.test(f) || val("guardian." + f))) kyufu.once("guardian_done");
  });

  function application(block) {
    const n = block.dataset.n;
    const person = (p) => {
      const o = {};
      PERSON.forEach((f) => { o[f] = val(p + f) || null; });
      return o;
    };
    const guardian = person("guardian.");
    ["postal_code", "email", "phone"].forEach((f) => { guardian[f] = val("guardian." + f); });
    // An expectant mother applies for herself: no child object, her delivery date instead.
    if (isMother()) return { kind: "expectant_mother", guardian: guardian, expected_delivery_date: val("expected_delivery_date"), consent: true };
    return { kind: "child", guardian: guardian, child: person("c" + n + "."), consent: true };
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!validate()) {
      summary(M.fix_errors);
      return;
    }
    summary("");
    activeBlocks().forEach(() => kyufu.funnel("child_done"));
    const list = $("confirm-list");
    list.textContent = "";
    const add = (dl, k, v) => {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = v;
      dl.append(dt, dd);
    };
    const g = document.createElement("dl");
    add(g, M.guardian, val("guardian.family_name") + " " + val("guardian.given_name") + "（" + val("guardian.family_name_kana") + " " + val("guardian.given_name_kana") + "） " + val("guardian.email"));
    list.appendChild(g);
    activeBlocks().forEach((b, i) => {
      const n = b.dataset.n;
      const dl = document.createElement("dl");
      if (isMother()) add(dl, M.expected_delivery_date, val("expected_delivery_date"));
      else add(dl, M.child + " " + (i + 1), val("c" + n + ".family_name") + " " + val("c" + n + ".given_name") + "（" + val("c" + n + ".birth_date") + "）");
      add(dl, M.document, b.querySelector("input[type=file]").files[0].name);
      list.appendChild(dl);
    });
    form.hidden = true;
    $("confirm").hidden = false;
    $("confirm").focus();
    enterCheckStep();
    kyufu.funnel("confirm_shown");
  });
  $("back").addEventListener("click", () => {
    $("confirm").hidden = true;
    form.hidden = false;
    form.querySelector("input").focus();
  });

  function newKey() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }
  async function sendOne(block) {
    // One key per child, kept across retries: a retry never makes a second application.
    if (!block.dataset.key) block.dataset.key = newKey();
    const body = new FormData();
    body.append("application", new Blob([JSON.stringify(application(block))], { type: "application/json" }));
    body.append("document", await preparedDocument(block));
    try {
      const r = await uploadWithProgress("/api/v1/applications", body,
        { "Idempotency-Key": block.dataset.key, Accept: "application/json" }, (share) => showProgress(block, share));
      const v = r.json || {};
      if (r.status === 202) return { ok: true, id: v.application_id, token: v.status_token, reference: v.reference, code: v.lookup_code };
      return { ok: false, status: r.status, code: v.code || "service_unavailable", errors: v.errors || [] };
    } catch (e) {
      return { ok: false, status: 0, code: "network", errors: [] };
    }
  }
  // Every child is in: the turn ends now, so the next person in the queue gets it at once
  // instead of when the pass would expire. Best effort; keepalive lets it finish if the page
  // is closed, and a failure only means the place comes back at expiry.
  function spendPass() {
    try {
      fetch("/api/v1/pass/spend", { method: "POST", credentials: "same-origin", keepalive: true, headers: { Accept: "application/json" } })
        .catch(() => {});
    } catch (e) { /* nothing to do */ }
  }
  function showFieldErrors(block, errors) {
    const n = block.dataset.n;
    errors.forEach((fe) => {
      const id = fe.field.replace(/^child\./, "c" + n + ".");
      const el = $(id) || (fe.field === "consent" ? $("consent") : null);
      if (el) setError(el, M[fe.code] || M.fix_errors);
    });
  }

  $("send").addEventListener("click", async () => {
    const send = $("send");
    send.disabled = true;
    send.textContent = M.sending;
    const blocks = activeBlocks();
    const results = [];
    for (const b of blocks) {
      if (b.dataset.done) { results.push({ block: b, res: JSON.parse(b.dataset.done) }); continue; }
      const res = await sendOne(b);
      if (res.ok) { b.dataset.done = JSON.stringify(res); keepReceipt(b, res); }
      else kyufu.funnel("error", res.code === "network" ? "service_unavailable" : res.code);
      results.push({ block: b, res: res });
    }
    send.disabled = false;
    send.textContent = M.retry;
    const failed = results.filter((x) => !x.res.ok);
    const list = $("done-list");
    list.textContent = "";
    results.forEach(({ block, res }) => {
      if (res.ok) { list.appendChild(kyufu.receiptItem(receiptOf(block, res), M)); return; }
      const li = document.createElement("li");
      const who = document.createElement("strong");
      who.textContent = receiptOf(block, res).who;
      const p = document.createElement("p");
      p.className = "error";
      p.textContent = M.failed + ": " + (M[res.code] || M.service_unavailable);
      li.append(who, p);
      list.appendChild(li);
    });
    if (results.some((x) => x.res.ok)) {
      kyufu.funnel("submitted");
      $("done").hidden = false;
    }
    const fixable = failed.filter((x) => x.res.status === 422 || x.res.status === 400 || x.res.status === 413 || x.res.status === 415);
    if (fixable.length) {
      fixable.forEach((x) => showFieldErrors(x.block, x.res.errors.length ? x.res.errors : [{ field: "child.document", code: x.res.code }]));
      // Children already received are kept; only the others go back to the form.
      results.filter((x) => x.res.ok).forEach((x) => { x.block.hidden = true; });
      $("confirm").hidden = true;
      form.hidden = false;
      summary(M.fix_errors);
    } else if (failed.some((x) => /^admission_/.test(x.res.code))) {
      const code = failed.find((x) => /^admission_/.test(x.res.code)).res.code;
      // One link, however often the send is retried; what was typed stays kept in this browser,
      // so the form comes back filled after the queue.
      let a = $("pass-again");
      if (!a) {
        a = document.createElement("a");
        a.id = "pass-again";
        a.className = "notice urgent";
        a.href = "/";
        $("confirm").appendChild(a);
      }
      a.textContent = M[code] || M.admission_expired;
    } else if (!failed.length) {
      $("confirm").hidden = true;
      $("intro").hidden = true;
      $("done-next").hidden = false;
      $("done").focus();
      // The completion page has its own address: a reload shows the receipts kept in this browser.
      history.replaceState(null, "", "/done");
      clearState();
      // The turn is over: no clock, no "answers put back" notice on the completion page.
      form.dataset.expires = "0";
      $("pass-time").hidden = true;
      $("restored").hidden = true;
      spendPass();
    }
  });

  // --- Receipts: kept in this browser as each application is accepted. ---
  function receiptOf(block, res) {
    const n = block.dataset.n;
    const who = isMother()
      ? val("guardian.family_name") + " " + val("guardian.given_name")
      : val("c" + n + ".family_name") + " " + val("c" + n + ".given_name");
    return { id: res.id, token: res.token, reference: res.reference, code: res.code, who: who };
  }
  function keepReceipt(block, res) {
    kyufu.saveReceipt(receiptOf(block, res));
  }

  // --- Who the application is for: children, or an expectant mother for herself. ---
  function isMother() {
    const r = form.querySelector("input[name=kind]:checked");
    return !!r && r.value === "expectant_mother";
  }
  // The blocks that are sent: every child, or the mother's one document block.
  function activeBlocks() {
    const all = Array.from(children.querySelectorAll("[data-child]"));
    return isMother() ? all.slice(0, 1) : all;
  }
  function applyKind() {
    const mother = isMother();
    $("expectant").hidden = !mother;
    $("add-child").hidden = mother;
    const legend = $("guardian").querySelector("legend");
    legend.textContent = mother ? legend.dataset.motherLabel : legend.dataset.childLabel;
    children.querySelectorAll("[data-child]").forEach((b, i) => {
      b.querySelector("[data-person]").hidden = mother;
      if (!b.dataset.done) b.hidden = mother && i > 0;
    });
    retitle();
  }
  // A delivery date from today up to 300 days ahead, as the server checks it.
  function checkDeliveryDate() {
    const el = $("expected_delivery_date");
    const v = el.value.trim();
    let code = "";
    if (!v) code = "required";
    else {
      const d = new Date(v + "T00:00:00");
      const today = new Date(); today.setHours(0, 0, 0, 0);
      if (isNaN(d)) code = "invalid_date";
      else if (d < today) code = "delivery_date_past";
      else if ((d - today) / 86400000 > 300) code = "delivery_date_too_far";
    }
    setError(el, code ? M[code] : "");
    return !code;
  }
  form.querySelectorAll("input[name=kind]").forEach((r) => r.addEventListener("change", applyKind));

  // A child's birth date: not in the future, and under 18 today.
  function checkChildAge(el) {
    if (!el || !el.value || el.getAttribute("aria-invalid") === "true") return !!(el && el.value);
    const born = new Date(el.value + "T00:00:00");
    const today = new Date();
    let code = "";
    if (isNaN(born)) code = "invalid_date";
    else if (born > today) code = "in_future";
    else {
      const adult = new Date(born); adult.setFullYear(born.getFullYear() + 18);
      if (adult <= today) code = "over_age";
    }
    if (code) setError(el, M[code]);
    return !code;
  }

  // --- No lost input: answers (sessionStorage) and photos (IndexedDB) kept in this browser
  // across reload, Back and language switch, until the applications are sent. ---
  const STATE = "kyufu-form";
  const inBlock = (el) => el.closest("[data-child]");
  function blocks() { return Array.from(children.querySelectorAll("[data-child]")); }
  function saveState() {
    const own = {};
    form.querySelectorAll("input").forEach((el) => {
      if (el.type === "file" || inBlock(el)) return;
      if (el.type === "radio") { if (el.checked) own["radio:" + el.name] = el.value; }
      else own[el.id] = el.type === "checkbox" ? el.checked : el.value;
    });
    const per = blocks().map((b) => {
      const o = {};
      b.querySelectorAll("input").forEach((el) => {
        if (el.type === "file") o.photo = !!(el.files && el.files[0]);
        else o[el.id.replace(/^c\d+\./, "")] = el.value;
      });
      return o;
    });
    try { sessionStorage.setItem(STATE, JSON.stringify({ own: own, blocks: per })); } catch (e) { /* private mode */ }
  }
  function photoDb() {
    return new Promise((resolve) => {
      try {
        const req = indexedDB.open(STATE, 1);
        req.onupgradeneeded = () => req.result.createObjectStore("photos");
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => resolve(null);
      } catch (e) { resolve(null); }
    });
  }
  async function savePhotos() {
    const db = await photoDb();
    if (!db) return;
    const tx = db.transaction("photos", "readwrite");
    const store = tx.objectStore("photos");
    store.clear();
    blocks().forEach((b, i) => {
      const f = b.querySelector("input[type=file]").files[0];
      if (f) store.put({ name: f.name, type: f.type, blob: f }, i);
    });
  }
  async function loadPhotos() {
    const db = await photoDb();
    if (!db) return [];
    return new Promise((resolve) => {
      const out = [];
      const req = db.transaction("photos").objectStore("photos").openCursor();
      req.onsuccess = () => {
        const c = req.result;
        if (!c) return resolve(out);
        out.push([c.key, c.value]);
        c.continue();
      };
      req.onerror = () => resolve(out);
    });
  }
  function clearState() {
    try { sessionStorage.removeItem(STATE); } catch (e) { /* nothing kept */ }
    photoDb().then((db) => { if (db) db.transaction("photos", "readwrite").objectStore("photos").clear(); });
  }
  async function restoreState() {
    let state = null;
    try { state = JSON.parse(sessionStorage.getItem(STATE) || "null"); } catch (e) { /* none */ }
    if (!state) return;
    for (let i = 1; i < state.blocks.length; i++) children.appendChild(number(template.cloneNode(true)));
    Object.entries(state.own).forEach(([k, v]) => {
      if (k.startsWith("radio:")) {
        const r = form.querySelector(`input[name="${k.slice(6)}"][value="${v}"]`);
        if (r) r.checked = true;
      } else if ($(k)) {
        if ($(k).type === "checkbox") $(k).checked = v; else $(k).value = v;
      }
    });
    const bs = blocks();
    state.blocks.forEach((o, i) => {
      Object.entries(o).forEach(([k, v]) => { const el = $("c" + bs[i].dataset.n + "." + k); if (el && k !== "photo") el.value = v; });
    });
    applyKind();
    const photos = await loadPhotos();
    photos.forEach(([i, p]) => {
      const b = bs[i];
      if (!b || !p || typeof DataTransfer === "undefined") return;
      const dt = new DataTransfer();
      dt.items.add(new File([p.blob], p.name, { type: p.type }));
      b.querySelector("input[type=file]").files = dt.files;
      const img = b.querySelector("img.preview");
      if (p.type.startsWith("image/")) { img.src = URL.createObjectURL(p.blob); img.hidden = false; }
    });
    state.blocks.forEach((o, i) => {
      const input = bs[i] && bs[i].querySelector("input[type=file]");
      if (o.photo && input && !(input.files && input.files[0])) setError(input, M.photo_again);
    });
    $("restored").hidden = false;
    // Reloaded on the check step: show it again.
    if (location.hash === "#check") form.requestSubmit();
  }
  // The check step has its own address and history entry: Back returns to the form.
  function enterCheckStep() {
    if (location.hash === "#check") history.replaceState({ step: "check" }, "", "#check");
    else history.pushState({ step: "check" }, "", "#check");
  }
  window.addEventListener("popstate", () => {
    if (location.hash !== "#check" && !$("confirm").hidden) {
      $("confirm").hidden = true;
      form.hidden = false;
      form.querySelector("input").focus();
    } else if (location.hash === "#check" && $("confirm").hidden && !form.hidden) {
      form.requestSubmit();
    }
  });
  $("back").addEventListener("click", () => { if (location.hash === "#check") history.back(); });
  form.addEventListener("input", saveState);
  form.addEventListener("change", (e) => { saveState(); if (e.target.type === "file") savePhotos(); });
  form.addEventListener("click", (e) => {
    if (e.target.closest("button")) setTimeout(() => { saveState(); savePhotos(); }, 0);
  });

  // The pass's time limit, stated and warned about five minutes before the end.
  function passClock() {
    const exp = Number(form.dataset.expires || 0) * 1000;
    if (!exp) return;
    const box = $("pass-time");
    const tick = () => {
      if (!Number(form.dataset.expires)) return;
      const left = exp - Date.now();
      const t = new Date(exp).toLocaleTimeString(kyufu.lang === "en" ? "en-GB" : "ja-JP", { hour: "2-digit", minute: "2-digit" });
      const msg = left <= 0 ? M.pass_over : left < 5 * 60000 ? M.pass_soon : M.pass_until;
      box.textContent = msg.replace("{t}", t).replace("{n}", String(Math.max(0, Math.ceil(left / 60000))));
      box.hidden = false;
      box.classList.toggle("urgent", left < 5 * 60000);
      if (left > 0) setTimeout(tick, 15000);
    };
    tick();
  }

  // ---- Documents as phones send them: downscaled before upload, with a progress bar. ----
  // Kept apart from the form logic above: the only links are preparedDocument, forgetPrepared,
  // uploadWithProgress and showProgress.
  const PHOTO_MAX_SIDE = 2000;
  const PHOTO_QUALITY = 0.85;
  const prepared = new WeakMap();

  // A photo decoded, turned upright by its EXIF orientation, scaled so its longer side is at most
  // PHOTO_MAX_SIDE, and re-encoded as JPEG, which carries no metadata (no GPS position, no camera
  // tags). A file the browser cannot decode, and a PDF, go as they are: the server decides.
  async function downscalePhoto(file) {
    if (!/^image\//.test(file.type) || typeof createImageBitmap !== "function") return file;
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch (e) {
      return file;
    }
    const scale = Math.min(1, PHOTO_MAX_SIDE / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; // a transparent screenshot turns white, not black
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", PHOTO_QUALITY));
    if (!blob) return file;
    return new File([blob], file.name.replace(/\.[^.]*$/, "") + ".jpg", { type: "image/jpeg" });
  }
  // The same prepared bytes for every retry of a child, so the idempotency key keeps its meaning.
  function preparedDocument(block) {
    const file = block.querySelector("input[type=file]").files[0];
    if (!prepared.has(block)) prepared.set(block, downscalePhoto(file).catch(() => file));
    return prepared.get(block);
  }
  function forgetPrepared(block) {
    prepared.delete(block);
    showProgress(block, null);
  }
  // POST with upload progress (fetch has none); resolves to { status, json }.
  function uploadWithProgress(url, body, headers, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.withCredentials = true;
      Object.keys(headers).forEach((k) => xhr.setRequestHeader(k, headers[k]));
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
      xhr.upload.onload = () => onProgress(1);
      xhr.onload = () => {
        let json = null;
        try { json = JSON.parse(xhr.responseText); } catch (e) { json = null; }
        resolve({ status: xhr.status, json: json });
      };
      xhr.onerror = () => reject(new Error("network"));
      xhr.onabort = () => reject(new Error("network"));
      onProgress(0);
      xhr.send(body);
    });
  }
  // One bar per child's document on the check page, above the send button; `share` 0..1, or null
  // to take it away.
  function showProgress(block, share) {
    let box = $("upload-progress");
    if (!box) {
      box = document.createElement("div");
      box.id = "upload-progress";
      $("send").insertAdjacentElement("beforebegin", box);
    }
    let bar = box.querySelector('progress[data-n="' + block.dataset.n + '"]');
    if (share === null) {
      if (bar) bar.parentNode.remove();
      return;
    }
    if (!bar) {
      const file = block.querySelector("input[type=file]").files[0];
      const row = document.createElement("label");
      row.className = "upload";
      row.textContent = M.uploading + ": " + (file ? file.name : "");
      bar = document.createElement("progress");
      bar.max = 100;
      bar.dataset.n = block.dataset.n;
      row.appendChild(bar);
      box.appendChild(row);
    }
    bar.value = Math.round(share * 100);
  }

  number(children.querySelector("[data-child]"));
  applyKind();
  passClock();
  restoreState();
})();
