// A phone photo through the form in headless Chromium: a camera-size JPEG with EXIF orientation and
// GPS is chosen for one child, the form downscales it before upload and shows a progress bar. The
// multipart body that leaves the browser is written to input.capture for the Rust test to check
// (small, upright, no metadata).
// Input: a JSON file (argv[2]) written by crates/kyufu/tests/browser.rs. Exit status 0 = pass.
import { readFileSync, writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const input = JSON.parse(readFileSync(process.argv[2], "utf8"));
const base = input.base;

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok -", what);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ viewport: { width: 360, height: 740 }, deviceScaleFactor: 1, locale: "ja-JP" });
const page = await context.newPage();
page.setDefaultTimeout(30000);
const failures = [];
page.on("pageerror", (e) => failures.push(String(e)));

try {
  let uploads = 0;
  let barDuringUpload = false;
  await page.route("**/api/v1/applications", async (route) => {
    const body = route.request().postDataBuffer();
    if (body) writeFileSync(input.capture, body);
    uploads++;
    barDuringUpload = await page.locator("#upload-progress progress").isVisible();
    await route.continue();
  });
  await page.goto(base + "/");
  await page.getByRole("button", { name: /申請を始める/ }).click();
  await page.waitForURL(/\/apply$/, { timeout: 60000 });
  for (const [k, v] of Object.entries(input.guardian)) {
    if (v !== null && v !== undefined) await page.fill(`[id="guardian.${k}"]`, v);
  }
  for (const [k, v] of Object.entries(input.child)) {
    if (v !== null && v !== undefined) await page.fill(`[id="c0.${k}"]`, v);
  }
  await page.setInputFiles('[id="c0.document"]', input.document);
  await page.check("#consent");
  await page.getByRole("button", { name: /入力内容を確認/ }).click();
  await page.getByRole("button", { name: "送信する" }).click();
  await page.locator("#done").waitFor({ state: "visible" });
  check(uploads === 1, "one upload");
  check(barDuringUpload, "a progress bar is shown while the document uploads");
  const bar = page.locator("#upload-progress progress");
  check((await bar.count()) === 1, "one bar for the one child");
  check((await bar.evaluate((b) => b.value)) === 100, "the bar is full once the upload is done");
  check((await page.locator("#done-list a").count()) === 1, "the application was accepted");
  check(failures.length === 0, "no script errors: " + failures.join("; "));
} catch (e) {
  console.error(String(e && e.stack || e));
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log("photo passed");
