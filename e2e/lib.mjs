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

// The readable text of a MIME message as the outbox stores it: every part's body decoded from
// base64 or quoted-printable (UTF-8), the parts one after another.
export function mailText(raw) {
  const out = [];
  for (const part of raw.split(/\r?\n--[^\r\n]+\r?\n/)) {
    const cut = part.search(/\r?\n\r?\n/);
    if (cut < 0) continue;
    const head = part.slice(0, cut).toLowerCase();
    const body = part.slice(cut).trim();
    if (!head.includes("content-type: text/")) continue;
    if (head.includes("content-transfer-encoding: base64")) {
      out.push(Buffer.from(body.replace(/\s+/g, ""), "base64").toString("utf8"));
    } else if (head.includes("content-transfer-encoding: quoted-printable")) {
      const bytes = body.replace(/=\r?\n/g, "").replace(/=([0-9A-Fa-f]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
      out.push(Buffer.from(bytes, "latin1").toString("utf8"));
    } else {
      out.push(body);
    }
  }
  return out.join("\n");
}
