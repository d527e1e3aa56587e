// What the browser walks share: their input (a JSON file named by argv[2]), checks that log what
// they saw, screenshots into $SHOTS when set, and Debian's Chromium.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

export const input = JSON.parse(readFileSync(process.argv[2], "utf8"));
export const shots = process.env.SHOTS || "";

export function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok -", what);
}

export async function shot(page, name, fullPage = true) {
  if (shots) await page.screenshot({ path: `${shots}/${name}.png`, fullPage });
}

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
}
