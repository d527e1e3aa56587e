// The citizen's whole path in headless Chromium at phone width (360 px):
// queue -> admitted -> form for two siblings with uploads (first with a mistake the page must
// show next to the field) -> check page -> sent -> status page with the coupon; the English
// switch; a status page that needs a person; an expectant mother in a second browser (completion
// page survives a reload), found again from a third browser with only the number and code, and with
// only the link in her receipt email; the "lost your link?" page. Screenshots go to $SHOTS when set.
// Input: a JSON file (argv[2]) written by crates/kyufu/tests/browser.rs. Exit status 0 = pass.
import { readFileSync, readdirSync } from "node:fs";
import { input, shots, check, shot, launch, mailText } from "./lib.mjs";

const base = input.base;

const browser = await launch();
const context = await browser.newContext({ viewport: { width: 360, height: 740 }, deviceScaleFactor: 1, locale: "ja-JP" });
const page = await context.newPage();
page.setDefaultTimeout(20000);
const failures = [];
page.on("pageerror", (e) => failures.push(String(e)));
const extraPages = [];

// A new visitor: its own browser context (no cookies, no storage shared with the others).
async function visitor() {
  const ctx = await browser.newContext({ viewport: { width: 360, height: 740 }, deviceScaleFactor: 1, locale: "ja-JP" });
  const p = await ctx.newPage();
  p.setDefaultTimeout(20000);
  p.on("pageerror", (e) => failures.push(String(e)));
  extraPages.push(p);
  return p;
}

// The status page until the coupon shows (the pipeline runs behind).
async function untilCoupon(p, open) {
  for (let i = 0; i < 40; i++) {
    await open();
    await p.locator("#result h2, #result p.error").first().waitFor();
    if (await p.locator(".coupon").count()) return (await p.locator(".coupon").textContent()).trim();
    await p.waitForTimeout(500);
  }
  return "";
}

async function expectantMother() {
  const m = input.mother;
  const p = await visitor();
  await p.goto(base + "/");
  await p.getByRole("button", { name: /申請を始める/ }).click();
  await p.waitForURL(/\/apply$/, { timeout: 60000 });
  await p.check("#kind-mother");
  check(await p.locator("#expectant").isVisible(), "the expectant mother is asked for her delivery date");
  check(!(await p.locator('[id="c0.given_name"]').isVisible()), "and not for a child's details");
  for (const [k, v] of Object.entries(m.guardian)) await p.fill(`[id="guardian.${k}"]`, v);
  await p.fill("#expected_delivery_date", "2000-01-01");
  await p.setInputFiles('[id="c0.document"]', input.document);
  await p.check("#consent");
  await p.getByRole("button", { name: /入力内容を確認/ }).click();
  check((await p.textContent("#expected_delivery_date-error")).includes("今日以降"), "a past delivery date is refused in the browser");
  await p.fill("#expected_delivery_date", m.due);
  await shot(p, "09-form-expectant-mother");
  await p.getByRole("button", { name: /入力内容を確認/ }).click();
  await p.getByRole("button", { name: "送信する" }).click();
  await p.locator("#done").waitFor({ state: "visible" });
  check(p.url().endsWith("/done"), "the completion page has its own address");
  const typeable = p.locator("#done-list .typeable");
  const reference = (await typeable.nth(0).textContent()).trim();
  const code = (await typeable.nth(1).textContent()).trim();
  await p.reload();
  await p.locator("#done-list li").first().waitFor();
  check((await p.locator("#done-list .typeable").nth(0).textContent()).trim() === reference, "a reload keeps the completion page");
  await shot(p, "10-done-after-reload");

  // Another browser, with only the number and the code written down.
  const q = await visitor();
  const coupon = await untilCoupon(q, async () => {
    await q.goto(base + "/status");
    await q.fill("#lookup-id", reference.toLowerCase().replace("-", " "));
    await q.fill("#lookup-token", code);
    await q.getByRole("button", { name: "確認する" }).click();
  });
  check(/^[0-9A-Z-]{10,}$/.test(coupon), "found again by number and code; the expectant mother got a coupon " + coupon);
  await shot(q, "11-status-found-by-number");

  // And with only the link in her receipt email.
  let receipt = "";
  for (let i = 0; i < 40 && !receipt; i++) {
    const f = readdirSync(input.outbox).find((n) => n.endsWith(".receipt.eml") && mailText(readFileSync(`${input.outbox}/${n}`, "utf8")).includes(reference));
    if (f) receipt = mailText(readFileSync(`${input.outbox}/${f}`, "utf8"));
    else await q.waitForTimeout(250);
  }
  check(receipt.includes(code), "the receipt email carries the number and the code");
  const link = receipt.match(/https?:\/\/\S+\/status#id=\S+/);
  check(!!link, "and the status link");
  const r = await visitor();
  check((await untilCoupon(r, () => r.goto(link[0]))) === coupon, "the link in the receipt email opens the same application");

  // Lost your link? The same answer for any address.
  await r.goto(base + "/lost");
  await r.fill("#lost-email", m.guardian.email);
  await r.getByRole("button", { name: /もう一度送る/ }).click();
  await r.locator("#lost-result").filter({ hasText: "送りました" }).waitFor();
  check(true, "the lost-link page answers");
  await shot(r, "12-lost-link");
}

try {
  // Start page, then the queue (the test keeps the door slow so there is a wait).
  await page.goto(base + "/");
  check((await page.locator("html").getAttribute("lang")) === "ja", "Japanese by default");
  await shot(page, "01-start");
  await page.getByRole("button", { name: /申請を始める/ }).click();
  // The click only starts the navigation: let the page's deferred scripts run before looking.
  await page.waitForLoadState("domcontentloaded");
  if (page.url().endsWith("/wait")) {
    check(await page.locator("#position").isVisible(), "waiting room shows the position");
    check((await page.locator("meta[http-equiv=refresh]").count()) === 0, "no meta refresh where the script polls (it would reload under the script)");
    await shot(page, "02-waiting-room");
  } else {
    console.log("note - admitted at once, no waiting room shown");
  }
  await page.waitForURL(/\/apply$/, { timeout: 60000 });
  check(true, "admitted and moved to the form");

  // The form: guardian once.
  const g = input.guardian;
  for (const [k, v] of Object.entries(g)) {
    if (v !== null && v !== undefined) await page.fill(`[id="guardian.${k}"]`, v);
  }
  // Two children, the second added with the button (family name pre-filled).
  async function fillChild(n, c, kana) {
    for (const k of ["family_name", "given_name", "family_name_kana", "birth_date", "resident_id"]) {
      if (c[k] !== null && c[k] !== undefined) await page.fill(`[id="c${n}.${k}"]`, c[k]);
    }
    await page.fill(`[id="c${n}.given_name_kana"]`, kana);
    await page.setInputFiles(`[id="c${n}.document"]`, input.document);
  }
  await fillChild(0, input.children[0], input.children[0].given_name_kana);
  // A reload, then a language switch and back: nothing typed is lost, the photo neither.
  await page.waitForTimeout(300);
  await page.reload();
  await page.locator("#restored").waitFor({ state: "visible" });
  check((await page.inputValue('[id="guardian.email"]')) === g.email, "a reload keeps the guardian's answers");
  check((await page.inputValue('[id="c0.given_name"]')) === input.children[0].given_name, "and the child's");
  check(await page.evaluate(() => document.getElementById("c0.document").files.length === 1), "and the photo");
  check((await page.textContent("#pass-time")).includes("受付時間は"), "the time limit of the turn is stated");
  await page.getByRole("link", { name: "English" }).click();
  await page.locator("#restored").waitFor({ state: "visible" });
  check((await page.inputValue('[id="c0.birth_date"]')) === input.children[0].birth_date, "switching language keeps the answers");
  await page.getByRole("link", { name: "日本語" }).click();
  await page.locator("#restored").waitFor({ state: "visible" });
  check(await page.evaluate(() => document.getElementById("c0.document").files.length === 1), "and the photo, in either language");
  await page.getByRole("button", { name: /お子さんを追加/ }).click();
  check((await page.inputValue('[id="c1.family_name"]')) === g.family_name, "a sibling gets the family name filled in");
  // A mistake: the reading in Latin letters.
  await fillChild(1, input.children[1], "hanako");
  check(await page.locator("[data-child] img.preview").first().isVisible(), "the photo is previewed");
  await page.check("#consent");
  await page.getByRole("button", { name: /入力内容を確認/ }).click();
  const err = page.locator('[id="c1.given_name_kana-error"]');
  check((await err.textContent()).includes("カタカナ"), "the mistake is explained next to its field");
  check((await page.getAttribute('[id="c1.given_name_kana"]', "aria-invalid")) === "true", "the field is marked invalid");
  const summaryLink = page.locator("#form-errors a");
  check((await summaryLink.count()) === 1 && (await summaryLink.textContent()).includes("フリガナ"), "the error summary lists the error with a link");
  await summaryLink.click();
  check(await page.evaluate(() => document.activeElement.id === "c1.given_name_kana"), "the link goes to the field");
  await shot(page, "04-inline-error");
  await page.fill('[id="c1.given_name_kana"]', input.children[1].given_name_kana);
  await page.getByRole("button", { name: /入力内容を確認/ }).click();
  check(await page.locator("#confirm").isVisible(), "the check page is shown");
  check(page.url().endsWith("#check"), "the check step has its own address");
  await page.waitForTimeout(300);
  await page.reload();
  await page.locator("#confirm").waitFor({ state: "visible" });
  check(true, "a reload on the check step shows it again");
  await page.goBack();
  await page.locator("#apply").waitFor({ state: "visible" });
  check((await page.inputValue('[id="c1.given_name_kana"]')) === input.children[1].given_name_kana, "Back returns to the form with everything kept");
  await page.getByRole("button", { name: /入力内容を確認/ }).click();
  await page.locator("#confirm").waitFor({ state: "visible" });
  await shot(page, "03-form-check");
  await page.getByRole("button", { name: "送信する" }).click();
  await page.locator("#done").waitFor({ state: "visible" });
  const links = page.locator("#done-list a");
  check((await links.count()) === 2, "one application and one status link per child");
  check(await page.locator("#done-next").isVisible(), "the page says the turn is over and how to apply again");
  // Every child is in, so the form spends the admission pass: the gateway clears its cookie.
  let passGone = false;
  for (let i = 0; i < 50 && !passGone; i++) {
    passGone = !(await context.cookies()).some((c) => c.name === "kyufu_pass");
    if (!passGone) await page.waitForTimeout(100);
  }
  check(passGone, "the admission pass is spent and its cookie cleared");
  check((await page.evaluate(() => sessionStorage.getItem("kyufu-form"))) === null, "the kept answers are cleared once sent");
  check((await page.locator("#done-list .typeable").count()) === 4, "each child's number and code are shown");
  check(/^[0-9A-Z]{5}-[0-9A-Z]{5}$/.test(await page.locator("#done-list .typeable").first().textContent()), "the number is short and typeable");
  await shot(page, "05-confirmation");

  // The status page, until the coupon is issued.
  const href = await links.first().getAttribute("href");
  check(/^\/status#id=/.test(href), "the status link carries id and token in the fragment");
  let coupon = "";
  for (let i = 0; i < 40 && !coupon; i++) {
    await page.goto(base + href);
    await page.waitForTimeout(300);
    await page.reload();
    const c = page.locator(".coupon");
    if (await c.count()) coupon = (await c.textContent()).trim();
    else await page.waitForTimeout(500);
  }
  check(/^[0-9A-Z-]{10,}$/.test(coupon), "status page shows the coupon code " + coupon);
  check((await page.locator("h2").textContent()).includes("クーポンを発行しました"), "status says coupon issued");
  await shot(page, "06-status-coupon");

  // A case a person must look at.
  await page.goto(base + input.review_link);
  await page.locator("#result h2").waitFor();
  check((await page.locator("#result h2").textContent()).includes("担当者"), "needs review is said in plain words");
  check((await page.locator("#result ul li").count()) > 0, "with the reasons");
  await shot(page, "07-status-review");

  // English.
  await page.goto(base + "/?lang=en");
  check((await page.locator("html").getAttribute("lang")) === "en", "English switch");
  check((await page.locator("h1").textContent()).includes("per child"), "English text");
  await shot(page, "08-start-english");
  await page.goto(base + "/status");
  check((await page.locator("html").getAttribute("lang")) === "en", "the language is remembered");
  await expectantMother();
  check(failures.length === 0, "no script errors: " + failures.join("; "));
} catch (e) {
  console.error(String(e && e.stack || e));
  for (const p of extraPages) if (shots) await p.screenshot({ path: `${shots}/failure-${extraPages.indexOf(p)}.png`, fullPage: true }).catch(() => {});
  if (shots) await page.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log("walk passed");
