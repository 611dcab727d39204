// WebP and AVIF in a real browser: a page of <img> tags pointing at a ross that serves
// AVIF, WebP and JPEG. Headless Chromium (Debian's) names AVIF in its Accept header, so it
// must receive AVIF (the answer it got is checked, not only what ross would send) and show
// every image at its size; with its Accept rewritten to a WebP-only browser's, WebP; with
// "*/*", JPEG. Run by scripts/test after the release build: `npm test` here.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, copyFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";
import { freePort, until } from "./support.mjs";

const ROOT = resolve(import.meta.dirname, "../..");
const BUILD = join(ROOT, "target/release");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync",
];
// Sizes and modes of the page's images, of the bundled samples.
const IMAGES = [
  ["300/300/crop/ladybird.jpg", 300, 300],
  ["200/250/resizecomp/storm.jpg", 200, 250],
  ["240/160/crop/transparent.png", 240, 160],
  ["72/72/crop/flower.jpg", 72, 72],
];

let ross, base, work, browser, log = "";

before(async () => {
  work = mkdtempSync(join(tmpdir(), "ross-formats-"));
  const plugins = join(work, "plugins");
  mkdirSync(plugins);
  for (const file of readdirSync(BUILD)) {
    if (/^lib(crop|resizecomp)\.so$/.test(file)) copyFileSync(join(BUILD, file), join(plugins, file));
  }
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  ross = spawn(join(BUILD, "ross"), ["serve"], {
    cwd: ROOT,
    env: {
      ...process.env,
      ROSS__SERVER__LISTEN: `127.0.0.1:${port}`,
      ROSS__DATA_DIR: join(work, "data"),
      ROSS__CACHE__DIR: join(work, "cache"),
      ROSS__PLUGINS__DIR: plugins,
      ROSS__WHITELIST__ENABLED: "false",
      ROSS__OUTPUT__FORMATS: "avif,webp,jpeg",
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  ross.stderr.on("data", (chunk) => { log += chunk; });
  await until("ross answering /health", async () => (await fetch(`${base}/health`)).ok,
    () => log.slice(-3000));
  browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
});

after(async () => {
  await browser?.close();
  ross?.kill("SIGTERM");
  rmSync(work, { recursive: true, force: true });
});

/** Loads a page of the images with Chromium's own Accept header, or `accept` instead;
 * returns what the browser received and what it shows. */
async function showImages(accept) {
  const context = await browser.newContext();
  const page = await context.newPage();
  if (accept) {
    await page.route(`${base}/**`, (route) =>
      route.continue({ headers: { ...route.request().headers(), accept } }));
  }
  const received = new Map();
  let pending = [];
  const record = async (r) => {
    const body = await r.body();
    received.set(new URL(r.url()).pathname, {
      status: r.status(),
      type: r.headers()["content-type"],
      vary: r.headers()["vary"],
      cache: r.headers()["x-cache"],
      magic: body.subarray(0, 12),
      accept: (await r.request().allHeaders())["accept"],
    });
  };
  page.on("response", (r) => {
    if (r.url().startsWith(base)) pending.push(record(r));
  });
  const html = IMAGES.map(([path]) => `<img src="${base}/${path}">`).join("\n");
  await page.setContent(`<!doctype html><body>${html}</body>`, { waitUntil: "load" });
  await Promise.all(pending);
  const shown = await page.$$eval("img", (imgs) =>
    imgs.map((i) => ({ complete: i.complete, w: i.naturalWidth, h: i.naturalHeight })));
  await context.close();
  return { received, shown };
}

function kindOf(magic) {
  const text = magic.toString("latin1");
  if (magic[0] === 0xff && magic[1] === 0xd8) return "jpeg";
  if (text.startsWith("RIFF") && text.slice(8, 12) === "WEBP") return "webp";
  if (text.slice(4, 12) === "ftypavif") return "avif";
  return "other";
}

for (const [name, accept, want] of [
  ["Chromium's own Accept", null, "avif"],
  ["a WebP-only browser's Accept", "image/webp,image/*,*/*;q=0.8", "webp"],
  ["*/*", "*/*", "jpeg"],
]) {
  test(`with ${name}, Chromium receives ${want} and shows every image at its size`, async () => {
    const { received, shown } = await showImages(accept);
    for (const [path] of IMAGES) {
      const got = received.get(`/${path}`);
      assert.ok(got, `no response for ${path}: got ${[...received.keys()]}\n${log.slice(-2000)}`);
      assert.equal(got.status, 200, path);
      if (!accept) assert.match(got.accept, /image\/avif/, "Chromium does not name AVIF");
      assert.equal(got.type, `image/${want}`, path);
      assert.equal(kindOf(got.magic), want, path);
      assert.equal(got.vary, "Accept", path);
    }
    for (const [i, [path, w, h]] of IMAGES.entries()) {
      assert.ok(shown[i].complete, `${path} not loaded`);
      assert.deepEqual([shown[i].w, shown[i].h], [w, h], `${path} shown at the wrong size`);
    }
  });
}
