// The admin pages in real headless Chromium (Debian's), driven by playwright-core: logging in
// and out, the whitelist, a purge, a broken plugin, and the refusals (no session, no CSRF
// token). Every page is saved as a screenshot at laptop and phone width under
// target/screenshots/. Run by scripts/test after the release build: `npm test` here.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, copyFileSync, writeFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";
import { freePort, until as waitUntil } from "./support.mjs";

const ROOT = resolve(import.meta.dirname, "../..");
const BUILD = join(ROOT, "target/release");
const SHOTS = join(ROOT, "target/screenshots");
const TOKEN = "browser-test-admin-token-0123";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync",
];
const LAPTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };

let ross, base, work, plugins, browser, log = "";

/** Waits for `check`, failing with the end of ross's log. */
const until = (what, check, ms) => waitUntil(what, check, () => log.slice(-3000), ms);

before(async () => {
  work = mkdtempSync(join(tmpdir(), "ross-browser-"));
  plugins = join(work, "plugins");
  mkdirSync(plugins);
  for (const file of readdirSync(BUILD)) {
    if (/^lib(crop|resize|resizecomp|blur)\.so$/.test(file)) copyFileSync(join(BUILD, file), join(plugins, file));
  }
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  // From the repository root, with the built-in media root: the bundled samples.
  ross = spawn(join(BUILD, "ross"), ["serve"], {
    cwd: ROOT,
    env: {
      ...process.env,
      ROSS__SERVER__LISTEN: `127.0.0.1:${port}`,
      ROSS__DATA_DIR: join(work, "data"),
      ROSS__PLUGINS__DIR: plugins,
      ROSS__ADMIN__TOKEN: TOKEN,
      ROSS__WHITELIST__SIZES: "72x72,300x300",
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  ross.stderr.on("data", (chunk) => { log += chunk; });
  await until("ross answering /health", async () => (await fetch(`${base}/health`)).ok);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  ross?.kill("SIGTERM");
  rmSync(work, { recursive: true, force: true });
});

/** A fresh browser context (own cookies) whose console errors (CSP refusals among them) are
 * collected. */
async function newPage(viewport = LAPTOP) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.errors = [];
  // The answers these tests expect to be refusals show as "failed to load" too: not errors.
  const expected = /Failed to load resource: the server responded with a status of 40[013] /;
  page.on("console", (m) => {
    if (m.type() === "error" && !expected.test(m.text())) page.errors.push(m.text());
  });
  page.on("pageerror", (e) => page.errors.push(String(e)));
  return page;
}

async function logIn(page) {
  await page.goto(`${base}/admin/login`);
  await page.fill("#token", TOKEN);
  await Promise.all([page.waitForURL(`${base}/admin`), page.click("button[type=submit]")]);
}

/** Saves `page` at laptop and phone width. */
async function shoot(page, name) {
  for (const [suffix, viewport] of [["laptop", LAPTOP], ["phone", PHONE]]) {
    await page.setViewportSize(viewport);
    await page.screenshot({ path: join(SHOTS, `${name}-${suffix}.png`), fullPage: true });
  }
  await page.setViewportSize(LAPTOP);
}

const status = async (path) => (await fetch(base + path)).status;

test("a request without a session goes to the login page, and a wrong token fails", async () => {
  const page = await newPage();
  await page.goto(`${base}/admin/settings`);
  assert.equal(page.url(), `${base}/admin/login`);
  await shoot(page, "login");
  await page.fill("#token", "not-the-admin-token");
  await page.click("button[type=submit]");
  await page.waitForSelector(".field-error");
  assert.match(await page.textContent(".field-error"), /not the admin token/);
  assert.equal(page.url(), `${base}/admin/login`);
  await page.goto(`${base}/admin`);
  assert.equal(page.url(), `${base}/admin/login`, "a failed login started a session");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("log in, see the dashboard, and log out", async () => {
  const page = await newPage();
  await logIn(page);
  assert.equal(await page.textContent("h1"), "Dashboard");
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === "ross_session");
  assert.ok(session, "no session cookie");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.equal(session.path, "/admin");
  assert.ok(session.expires > Date.now() / 1000, "the session cookie does not expire");
  // Traffic for the dashboard to show: renders, a hit and an error.
  for (const path of ["/300/300/crop/ladybird.jpg", "/300/300/crop/ladybird.jpg", "/72/72/resize/storm.jpg", "/300/300/crop/nope.jpg"]) {
    await fetch(base + path);
  }
  await page.reload();
  const text = await page.textContent("main");
  assert.match(text, /Cache hit ratio/);
  assert.match(text, /source-not-found/, "recent errors do not list the 404");
  assert.ok(await page.locator("svg polyline.p99").count() === 1, "no latency chart");
  // The script refreshes the page in place: a new request shows up without a reload.
  const before = await page.textContent(".tile .sub");
  await fetch(`${base}/300/300/resize/flower.jpg`);
  await page.waitForFunction((old) => document.querySelector(".tile .sub").textContent !== old, before, { timeout: 15000 });
  await shoot(page, "dashboard");
  assert.deepEqual(page.errors, [], "console errors (a CSP refusal?)");
  await Promise.all([page.waitForURL(`${base}/admin/login`), page.click(".logout button")]);
  await page.goto(`${base}/admin`);
  assert.equal(page.url(), `${base}/admin/login`, "still logged in after logging out");
  await page.context().close();
});

test("add a size and see a request for it succeed; a bad size is refused next to the field", async () => {
  const page = await newPage();
  await logIn(page);
  await page.goto(`${base}/admin/whitelist`);
  assert.equal(await status("/640/480/crop/ladybird.jpg"), 403);
  await page.fill("#size", "640x0480");
  await page.click("form.row button[type=submit]");
  assert.match(await page.textContent("#size-error"), /without leading zeros/);
  assert.equal(await page.inputValue("#size"), "640x0480", "what was typed is kept");
  await shoot(page, "whitelist-error");
  await page.fill("#size", "640x480");
  await Promise.all([page.waitForURL(`${base}/admin/whitelist`), page.click("form.row button[type=submit]")]);
  assert.match(await page.textContent(".notice"), /Added 640x480/);
  assert.equal(await status("/640/480/crop/ladybird.jpg"), 200);
  // Each size links to an example render.
  const example = await page.getAttribute("a.size:text('640x480')", "href");
  assert.match(example, /^\/640\/480\/crop\//);
  assert.equal(await status(example), 200);
  await shoot(page, "whitelist");
  // Removing it asks first (pages using the size break at once), then refuses it again.
  await page.click("li:has(a.size:text('640x480')) button");
  await page.waitForSelector(".confirm");
  assert.match(await page.textContent(".confirm"), /Remove 640x480\?/);
  assert.equal(await status("/640/480/crop/ladybird.jpg"), 200, "asking removed the size");
  await shoot(page, "whitelist-confirm");
  await Promise.all([page.waitForURL(`${base}/admin/whitelist`), page.click(".confirm button.danger")]);
  await page.waitForSelector(".notice");
  assert.match(await page.textContent(".notice"), /Removed 640x480/);
  assert.equal(await status("/640/480/crop/ladybird.jpg"), 403);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("purge by key: the confirmation shows what goes, and the entry count drops", async () => {
  for (const mode of ["crop", "resize", "resizecomp"]) {
    assert.equal(await status(`/300/300/${mode}/rotated-exif.jpg`), 200);
  }
  const page = await newPage();
  await logIn(page);
  await page.goto(`${base}/admin/cache`);
  const entries = async () => Number(await page.textContent(".tile .value"));
  const before = await entries();
  assert.ok(before >= 3, `only ${before} entries cached`);
  await shoot(page, "cache");
  await page.check("input[name=kind][value=key]");
  await page.fill("#value", "rotated-exif.jpg");
  await page.click("form.stack button[type=submit]");
  await page.waitForSelector(".confirm");
  assert.match(await page.textContent(".confirm"), /removes 3 entries/);
  assert.equal(await entries(), before, "the confirmation step removed something");
  await shoot(page, "cache-confirm");
  await Promise.all([page.waitForURL(`${base}/admin/cache`), page.click(".confirm button.danger")]);
  assert.match(await page.textContent(".notice"), /Purged 3 entries/);
  assert.equal(await entries(), before - 3);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("a broken plugin file shows its error on the plugins page", async () => {
  const page = await newPage();
  await logIn(page);
  writeFileSync(join(plugins, "libbroken.so"), "this is not a shared library");
  await page.goto(`${base}/admin/plugins`);
  await until("the refusal on the plugins page", async () => {
    await Promise.all([page.waitForURL(`${base}/admin/plugins`), page.click("form[action='/admin/plugins/rescan'] button")]);
    const refused = page.locator("ul.refused");
    return (await refused.count()) > 0 && /libbroken\.so/.test(await refused.textContent());
  });
  const refusal = await page.textContent("ul.refused li");
  assert.match(refusal, /libbroken\.so/);
  assert.match(await page.textContent("table.modes"), /resizecomp/);
  await shoot(page, "plugins");
  await page.goto(`${base}/admin/settings`);
  const settings = await page.textContent("main");
  assert.ok(!settings.includes(TOKEN), "the settings page shows the admin token");
  assert.match(settings, /admin\.token/);
  await shoot(page, "settings");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("a state-changing POST without a valid CSRF token gets 403 and changes nothing", async () => {
  const page = await newPage();
  await logIn(page);
  // The session's cookie goes with these requests; the CSRF token does not.
  for (const form of [{ size: "800x600" }, { size: "800x600", csrf: "0".repeat(64) }]) {
    const answer = await page.request.post(`${base}/admin/whitelist`, { form, maxRedirects: 0 });
    assert.equal(answer.status(), 403);
    const headers = answer.headers();
    assert.match(headers["content-security-policy"], /frame-ancestors 'none'/);
    assert.equal(headers["x-content-type-options"], "nosniff");
    assert.equal(headers["cache-control"], "no-store");
    assert.ok(headers["referrer-policy"]);
  }
  assert.equal(await status("/800/600/crop/ladybird.jpg"), 403, "the whitelist changed");
  const logout = await page.request.post(`${base}/admin/logout`, { form: {}, maxRedirects: 0 });
  assert.equal(logout.status(), 403, "logout without the token");
  await page.context().close();
});

test("the welcome page links to sample renders in each mode and to the admin pages", async () => {
  const page = await newPage();
  await page.goto(`${base}/`);
  assert.equal(await page.textContent("h1"), "ross is running");
  const images = page.locator(".samples img");
  assert.equal(await images.count(), 4);
  await page.waitForFunction(() => [...document.images].every((i) => i.complete && i.naturalWidth === 300));
  assert.equal(await page.getAttribute("a[href='/admin']", "href"), "/admin");
  await shoot(page, "welcome");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
