// The citizen's whole path in headless Chromium at phone width (360 px):
// queue -> admitted -> form for two siblings with uploads (first with a mistake the page must
// show next to the field) -> check page -> sent -> status page with the coupon; the English
// switch; a status page that needs a person. Screenshots go to $SHOTS when set.
// Input: a JSON file (argv[2]) written by crates/kyufu/tests/browser.rs. Exit status 0 = pass.
import { input, shots, check, shot, launch } from "./lib.mjs";

const base = input.base;

const browser = await launch();
const context = await browser.newContext({ viewport: { width: 360, height: 740 }, deviceScaleFactor: 1, locale: "ja-JP" });
const page = await context.newPage();
page.setDefaultTimeout(20000);
const failures = [];
page.on("pageerror", (e) => failures.push(String(e)));

try {
  // Start page, then the queue (the test keeps the door slow so there is a wait).
  await page.goto(base + "/");
  check((await page.locator("html").getAttribute("lang")) === "ja", "Japanese by default");
  await shot(page, "01-start");
  await page.getByRole("button", { name: /申請を始める/ }).click();
  if (page.url().endsWith("/wait")) {
    check(await page.locator("#position").isVisible(), "waiting room shows the position");
    check((await page.locator("meta[http-equiv=refresh]").count()) === 0, "the script took over from the meta refresh");
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
  await shot(page, "04-inline-error");
  await page.fill('[id="c1.given_name_kana"]', input.children[1].given_name_kana);
  await page.getByRole("button", { name: /入力内容を確認/ }).click();
  check(await page.locator("#confirm").isVisible(), "the check page is shown");
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
  check((await page.locator("h2").textContent()).includes("クーポン発行"), "status says coupon issued");
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
  check(failures.length === 0, "no script errors: " + failures.join("; "));
} catch (e) {
  console.error(String(e && e.stack || e));
  if (shots) await page.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log("walk passed");
