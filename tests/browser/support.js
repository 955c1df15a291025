// What every browser test needs: a shop of its own (`souk up` on a free port, against the local
// PostgreSQL and NATS, its databases and stream removed afterwards), Debian's Chromium driven by
// playwright-core with a fresh profile, and a `visit` that keeps a screenshot of the page and
// checks it with axe-core.
import { spawn, spawnSync } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, "../..");
export const soukBinary = process.env.SOUK_BIN ?? join(root, "target/debug/souk");
export const chromiumPath = process.env.SOUK_CHROMIUM ?? "/usr/bin/chromium";
export const artifacts = join(root, "target/browser-artifacts");
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

/** Why these tests cannot run here, or null when they can. */
export function missing() {
  if (!existsSync(soukBinary)) return `${soukBinary} is not built (cargo build -p souk)`;
  if (!existsSync(chromiumPath)) return `${chromiumPath} is missing (apt-get install chromium)`;
  return null;
}

const services = ["user", "product", "cart", "order", "payment"];

async function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** Polls `check` until it returns a truthy value, or fails after `ms`. */
export async function eventually(what, ms, check) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`${what} within ${ms} ms${last ? `: ${last}` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Deletes a JetStream stream by speaking NATS's text protocol (best effort). */
function deleteStream(stream) {
  return new Promise((done) => {
    const socket = connect(4222, "127.0.0.1");
    const finish = () => { socket.destroy(); done(); };
    socket.setTimeout(3000, finish);
    socket.on("error", finish);
    let sent = false;
    socket.on("data", (data) => {
      if (!sent && data.toString().startsWith("INFO")) {
        sent = true;
        socket.write(`CONNECT {"verbose":false}\r\nPUB $JS.API.STREAM.DELETE.${stream} 0\r\n\r\nPING\r\n`);
      } else if (data.toString().includes("PONG")) {
        finish();
      }
    });
  });
}

/**
 * Starts a whole shop (`souk up`) with its own name on a free port and an admin account; its
 * log goes to target/browser-artifacts/<name>.log. `stop()` ends it and removes its data.
 */
export async function startShop(label) {
  const name = `brw${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const admin = { email: `admin-${name}@example.com`, password: "admin password 1" };
  mkdirSync(artifacts, { recursive: true });
  const log = createWriteStream(join(artifacts, `${label}.shop.log`));
  const child = spawn(soukBinary, ["up"], {
    env: {
      ...process.env,
      SOUK_SHOP_NAME: name,
      SOUK_HTTP_ADDR: `127.0.0.1:${port}`,
      SOUK_ADMIN_EMAIL: admin.email,
      SOUK_ADMIN_PASSWORD: admin.password,
      SOUK_LOG_FORMAT: process.env.SOUK_LOG_FORMAT ?? "json",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  let exited = null;
  const exit = new Promise((r) => child.on("exit", (code, signal) => { exited = code ?? signal; r(); }));
  const shop = {
    name,
    url,
    admin,
    async stop() {
      if (exited === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 15000);
        await exit;
        clearTimeout(timer);
      }
      for (const service of services) {
        spawnSync("psql", ["-h", "127.0.0.1", "-U", "postgres", "-w", "-q", "-d", "postgres", "-c",
          `drop database if exists ${name}_${service} with (force)`], { stdio: "ignore" });
      }
      await deleteStream(`${name.toUpperCase()}_EVENTS`);
    },
  };
  try {
    await eventually(`the shop at ${url} is ready`, 90000, async () => {
      if (exited !== null) throw new Error(`souk up exited (${exited}); see its log`);
      return (await fetch(`${url}/readyz`)).ok;
    });
  } catch (error) {
    await shop.stop();
    throw error;
  }
  return shop;
}

/** Calls the shop's REST API (for setting a scene, never for what a test checks in the browser). */
export async function api(shop, method, path, { token, body } = {}) {
  const response = await fetch(`${shop.url}${path}`, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body ? { "content-type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

export async function adminToken(shop) {
  const { access_token } = await api(shop, "POST", "/api/auth/login", { body: shop.admin });
  return access_token;
}

/**
 * A browser of its own: Debian's Chromium, headless, a fresh profile, nothing in the background
 * that talks to the network. Every request the pages make is recorded, so a test can check that
 * none left the shop; console errors (a CSP violation among them) and page errors too.
 */
export async function openBrowser(t, { javaScript = true } = {}) {
  const profile = mkdtempSync(join(tmpdir(), "souk-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    javaScriptEnabled: javaScript,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1100, height: 800 },
  });
  const requests = [];
  const problems = [];
  context.on("request", (request) => requests.push(request.url()));
  context.on("console", (message) => {
    // A page answered with an error status is the test's business (it may expect a 400);
    // a script, style or poll that fails is recorded below.
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
      problems.push(`console: ${message.text()} (${message.location().url})`);
    }
  });
  context.on("response", (response) => {
    if (response.status() >= 400 && response.request().resourceType() !== "document") {
      problems.push(`${response.status()} for ${response.url()}`);
    }
  });
  context.on("weberror", (error) => problems.push(`page error: ${error.error()}`));
  const page = context.pages()[0] ?? (await context.newPage());
  if (!javaScript) scriptless.add(page);
  page.setDefaultTimeout(15000);
  t.after(async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  });
  return { context, page, requests, problems };
}

/** Pages of browsers with JavaScript off: nothing, not even axe, can be evaluated in them. */
const scriptless = new WeakSet();

/** Every request went to the shop itself, and no page logged an error. */
export function assertStayedInShop(shop, browser) {
  const elsewhere = browser.requests.filter(
    (url) => !url.startsWith(`${shop.url}/`) && !url.startsWith("data:") && url !== "about:blank",
  );
  assert.deepEqual(elsewhere, [], "requests that left the shop");
  assert.deepEqual(browser.problems, [], "errors in the pages");
}

/**
 * The page as it is now: a full-page screenshot kept under target/browser-artifacts/<test>/,
 * and axe-core's check, which must find no serious or critical violation.
 */
export async function visit(page, test, name) {
  await page.waitForLoadState("load");
  const dir = join(artifacts, test);
  visit.started ??= new Set();
  if (!visit.started.has(test)) {
    // A run's screenshots only: none left from an earlier run under another name.
    visit.started.add(test);
    rmSync(dir, { recursive: true, force: true });
  }
  mkdirSync(dir, { recursive: true });
  visit.count = (visit.count ?? 0) + 1;
  await page.screenshot({ path: join(dir, `${String(visit.count).padStart(2, "0")}-${name}.png`), fullPage: true });
  // With JavaScript off nothing can be evaluated in the page: the same pages are checked in
  // the tests that have it on (the markup differs only by a <noscript> refresh).
  if (scriptless.has(page)) return;
  // Evaluated through the debugging protocol, which the page's CSP does not govern.
  await page.evaluate(axeSource);
  const results = await page.evaluate(() =>
    globalThis.axe.run(document, { resultTypes: ["violations"] }),
  );
  const serious = results.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  assert.deepEqual(serious, [], `axe on ${name} (${page.url()})`);
}
