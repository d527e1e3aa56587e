// A reviewer's shift in headless Chromium at desktop width, by keyboard only after logging in:
// n takes the next case, z zooms and x rotates the document, a approves (and opens the next
// case), r goes to the reject reason (arrows pick one, Enter rejects), Esc leaves a case (which
// gives it back). The list shows who holds which case. Screenshots go to $SHOTS when set.
// Input: a JSON file (argv[2]) written by crates/kyufu-review/tests/browser.rs. Exit status 0 = pass.
import { input, check, shot as shotFull, launch } from "./lib.mjs";

const base = input.base;
const shot = (page, name) => shotFull(page, name, false);
const caseId = (page) => (page.url().match(/\/review\/cases\/([0-9a-f-]{36})/) || [])[1];

const browser = await launch();
const context = await browser.newContext({ viewport: { width: 1366, height: 860 }, deviceScaleFactor: 1, locale: "ja-JP", timezoneId: "Europe/London" });
const page = await context.newPage();
page.setDefaultTimeout(20000);
// A controllable clock, so the page's 30-second lease renewal can be seen without waiting.
await page.clock.install();
const failures = [];
page.on("pageerror", (e) => failures.push(String(e)));
page.on("console", (m) => { if (m.type() === "error") failures.push(m.text()); });

try {
  // Log in: the console sends an unknown visitor to the form and back.
  await page.goto(base + "/review");
  check(page.url().includes("/review/login"), "the login form first");
  await page.getByLabel(/名前/).fill(input.name);
  await page.getByLabel(/パスワード/).fill(input.password);
  await page.getByRole("button", { name: "ログイン" }).click();
  await page.waitForURL(/\/review(\?.*)?$/);
  check(await page.getByRole("heading", { name: /審査待ち 4 件/ }).isVisible(), "the list after login");
  const bobRow = page.locator(`tr[data-case="${input.held_by_bob}"]`);
  check((await bobRow.textContent()).includes("bob さんが担当（"), "the list shows bob's lock and until when");
  await shot(page, "review-01-list");

  // n: the oldest case nobody holds is taken and opened.
  await page.keyboard.press("n");
  await page.waitForURL(/\/review\/cases\//);
  const first = caseId(page);
  check(first === input.cases[0], "n took the oldest free case");
  check(await page.getByText("あなたが担当しています").isVisible(), "the case page says it is mine");
  const renewal = page.waitForResponse((r) => r.url().endsWith(`/review/api/cases/${first}/lease`));
  await page.clock.runFor(31_000);
  check((await renewal).status() === 200, "the open page renewed its lease after 30 s");
  // The document beside the registry data; z zooms, x rotates.
  const img = page.locator("#doc");
  await img.evaluate((i) => i.complete || new Promise((r) => (i.onload = r)));
  check((await img.evaluate((i) => i.naturalWidth)) > 0, "the document image loads");
  const before = await img.boundingBox();
  await page.keyboard.press("z");
  await page.keyboard.press("z");
  await page.keyboard.press("x");
  check((await page.locator("body").getAttribute("data-zoom")) === "2", "z z: 200 %");
  check((await page.locator("body").getAttribute("data-rotation")) === "90", "x: a quarter turn");
  await page.waitForTimeout(200);
  const after = await img.boundingBox();
  check(after.height * after.width > before.height * before.width * 3, `the document is bigger on screen (${Math.round(before.width)}x${Math.round(before.height)} -> ${Math.round(after.width)}x${Math.round(after.height)})`);
  // The applied-for child's row in the household agrees with the application.
  const childRow = page.locator("h3:has-text('世帯の構成員') + table tr", { hasText: input.child_resident_id });
  check((await childRow.locator("td.mismatch").count()) === 0 && (await childRow.locator("td.ok").count()) === 3, "the child's household row is marked as matching");
  await shot(page, "review-02-case-zoomed");
  await page.keyboard.press("z"); await page.keyboard.press("z"); await page.keyboard.press("z");
  await page.keyboard.press("x"); await page.keyboard.press("x"); await page.keyboard.press("x");
  await shot(page, "review-03-case");

  // a: approve, and the next case opens.
  await page.keyboard.press("a");
  await page.waitForURL((u) => !u.toString().includes(first) && u.toString().includes("/review/cases/"));
  const second = caseId(page);
  check(second === input.cases[1], "a approved and opened the next case");

  // r: to the reason; an arrow picks the second reason; Enter rejects; the next case opens.
  await page.keyboard.press("r");
  check(await page.evaluate(() => document.activeElement && document.activeElement.id === "reason"), "r focuses the reject reason");
  await page.keyboard.press("ArrowDown");
  check((await page.locator("#reason").inputValue()) === "not_same_household", "an arrow picks a reason");
  await page.keyboard.press("Enter");
  await page.waitForURL((u) => !u.toString().includes(second) && u.toString().includes("/review/cases/"));
  const third = caseId(page);
  check(third === input.cases[2], "Enter rejected and opened the next case");

  // Esc leaves the third case undecided: it is given back (the list shows nobody holding it).
  await page.keyboard.press("Escape");
  await page.waitForURL(/\/review$/);
  let free = false;
  for (let i = 0; i < 20 && !free; i++) {
    await page.reload();
    free = (await page.locator(`tr[data-case="${third}"] td`).last().textContent()).trim() === "—";
    if (!free) await page.waitForTimeout(250);
  }
  check(free, "leaving the case gave it back");
  await shot(page, "review-04-list-after");

  // A decided case, approved again by hand: a page in words, not JSON.
  const resp = await page.request.post(`${base}/review/cases/${first}/decision`, { form: { decision: "approve" } });
  check(resp.status() === 409 && (await resp.text()).includes("すでに判定されています"), "a second decision gets a page in words");
  await page.goto(`${base}/review/cases/${second}`);
  check((await page.locator("table").last().textContent()).includes("同一世帯でない"), "the reject reason is in the history");
  await page.locator("h2:has-text('履歴')").scrollIntoViewIfNeeded();
  await shot(page, "review-05-history");
  check(failures.length === 0, "no script errors: " + failures.join("; "));
  console.log("review walk passed");
} finally {
  await browser.close();
}
