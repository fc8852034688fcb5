// The console end to end in Debian's Chromium: a user signs in, generates in the playground
// and finds the image in the gallery, cancels a task, creates and revokes a key; the operator
// adds credits and tests a channel. Every page is screenshotted and checked with axe-core
// (no serious or critical violations). Prints "ok: …" on success; any failure throws.
//
// Env: EASEL_BASE, EASEL_KEY (a user's key), EASEL_ADMIN_TOKEN, CHROMIUM (its path),
// SCREENSHOTS (a directory).
import { chromium } from "playwright-core";
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const require = createRequire(import.meta.url);
const AXE = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const { EASEL_BASE: base, EASEL_KEY: key, EASEL_ADMIN_TOKEN: admin, CHROMIUM: executablePath } = process.env;
const shots = process.env.SCREENSHOTS || "screenshots";
fs.mkdirSync(shots, { recursive: true });

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
}

const checked = [];
async function audit(page, name) {
  await page.screenshot({ path: path.join(shots, name + ".png"), fullPage: true });
  // The console's policy forbids inline scripts; the context bypasses it for axe alone.
  await page.addScriptTag({ content: AXE });
  const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  if (bad.length) {
    const list = bad.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
    throw new Error(`axe on ${name}:\n  ` + list.join("\n  "));
  }
  checked.push(name);
}

async function signIn(page, secret) {
  await page.goto(base + "/console");
  check(page.url().includes("/console/login"), "a signed-out visit lands on the sign-in page: " + page.url());
  await page.getByLabel(/API key|API 密钥/).fill(secret);
  await page.getByRole("button", { name: /Sign in|登录/ }).click();
  await page.waitForLoadState("load");
}

async function generate(page, prompt) {
  await page.goto(base + "/console/playground?model=seedream-5-0");
  await page.locator("#prompt").fill(prompt);
  await page.locator('input[name="n"]').fill("1");
  await page.locator('input[name="n"]').dispatchEvent("change");
  await page.locator("#price-value").waitFor();
  check((await page.locator("#price-value").textContent()).startsWith("$"), "the price shows before submitting");
  await page.locator("#generate").click();
  await page.waitForURL(/\/console\/tasks\/task_/);
  return page.url().split("/console/tasks/")[1];
}

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const context = await browser.newContext({ bypassCSP: true, locale: "en-US", viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));

  // The sign-in page, then the user's pages.
  await page.goto(base + "/console/login");
  await audit(page, "login");
  await signIn(page, key);
  check(page.url() === base + "/console", "signed in to the overview: " + page.url());
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "easel_session");
  check(session && session.httpOnly && session.sameSite === "Strict", "an HttpOnly, SameSite=Strict session cookie");
  check(!(await page.evaluate(() => document.cookie)).includes("easel_session"), "scripts cannot read the session");

  // Generate in the playground; the task page shows it live, then its image.
  const first = await generate(page, "a lighthouse on a cliff at dusk");
  await page.locator(".badge.success").waitFor({ timeout: 60000 });
  await page.locator(".results img").first().waitFor();
  check((await page.locator("#timeline li").count()) >= 4, "the timeline lists the task's events");
  await audit(page, "task");

  // The image is in the gallery, and opens in the lightbox.
  await page.goto(base + "/console/gallery");
  const thumb = page.locator('.gallery img[alt="a lighthouse on a cliff at dusk"]');
  await thumb.first().waitFor();
  await audit(page, "gallery");
  await thumb.first().click();
  await page.locator("#lightbox[open]").waitFor();
  await page.screenshot({ path: path.join(shots, "gallery-lightbox.png") });
  await page.keyboard.press("Escape");

  // Cancel a task while it runs.
  const second = await generate(page, "a slow painting of the sea");
  await page.locator("#cancel").click();
  await page.waitForURL(new RegExp(second));
  await page.locator(".badge.cancelled").waitFor({ timeout: 30000 });

  await page.goto(base + "/console/tasks");
  check((await page.locator(`a[href="/console/tasks/${first}"]`).count()) === 1, "the first task is listed");
  await audit(page, "tasks");
  await page.goto(base + "/console/tasks?state=cancelled");
  check((await page.locator(`a[href="/console/tasks/${second}"]`).count()) === 1, "the filter finds the cancelled task");

  await page.goto(base + "/console");
  await audit(page, "overview");
  await page.goto(base + "/console/playground?model=gpt-image-1");
  await audit(page, "playground");

  // Create a key (shown once), then revoke it.
  await page.goto(base + "/console/keys");
  await page.locator("#create-key").click();
  const created = (await page.locator("#secret").textContent()).trim();
  check(/^sk-[0-9a-f]{48}$/.test(created), "a new key is shown: " + created);
  await audit(page, "keys");
  const hint = "sk-…" + created.slice(-4);
  const row = page.locator("tr", { hasText: hint });
  await row.getByRole("button", { name: /Revoke/ }).click();
  await page.waitForLoadState("load");
  check((await page.locator("tr", { hasText: hint }).textContent()).includes("revoked"), "the key reads revoked");
  check(!(await page.content()).includes(created), "the key is not shown again");

  await page.goto(base + "/console/webhooks");
  await audit(page, "webhooks");

  // At phone width, in Chinese.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(base + "/console/lang/zh-CN?back=/console/tasks");
  check((await page.locator("html").getAttribute("lang")) === "zh-CN", "the switch shows Chinese");
  await audit(page, "tasks-phone-zh");
  await page.goto(base + "/console/lang/en?back=/console");
  await page.setViewportSize({ width: 1280, height: 900 });

  // Keyboard: the skip link is the first stop and lands on the content.
  await page.keyboard.press("Tab");
  check((await page.evaluate(() => document.activeElement.className)) === "skip", "the skip link comes first");

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(/\/console\/login/);

  // The operator.
  await signIn(page, admin);
  check(page.url().endsWith("/console/admin/accounts"), "the operator lands on accounts: " + page.url());
  await audit(page, "admin-accounts");
  await page.locator("table a").first().click();
  const before = await page.locator("#balance").textContent();
  await page.locator("#credit-amount").fill("5");
  await page.locator("#add-credits").click();
  await page.waitForLoadState("load");
  const after = await page.locator("#balance").textContent();
  check(Number(after.slice(1)) - Number(before.slice(1)) === 5, `credits added: ${before} -> ${after}`);
  await audit(page, "admin-account");

  await page.goto(base + "/console/admin/channels");
  await page.locator('button[data-test-channel="local"]').click();
  await page.waitForLoadState("load");
  const outcome = await page.locator("[role=status]").first().textContent();
  check(/passed/.test(outcome), "the channel test passed: " + outcome);
  await audit(page, "admin-channels");
  await page.goto(base + "/console/admin/models");
  await audit(page, "admin-models");
  await page.goto(base + "/console/admin/system");
  await audit(page, "admin-system");

  check(errors.length === 0, "no script errors: " + errors.join("; "));
  console.log(`ok: ${checked.length} pages checked (${checked.join(", ")})`);
} finally {
  await browser.close();
}
