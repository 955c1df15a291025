// What keeps the storefront safe, checked over plain HTTP: the session cookie's flags (Secure
// behind TLS), CSRF tokens, the Content-Security-Policy, and assets with fingerprinted names
// and a year's cache.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { soukBinary, startShop } from "./support.js";

const why = existsSync(soukBinary) ? null : `${soukBinary} is not built (cargo build -p souk)`;
let shop;

before(async () => {
  if (!why) shop = await startShop("safety");
});

after(async () => {
  await shop?.stop();
});

function cookies(response) {
  return response.headers.getSetCookie();
}

function csrfOf(html) {
  return html.match(/name="csrf" value="([^"]+)"/)[1];
}

async function register(headers = {}) {
  const page = await fetch(`${shop.url}/register`, { headers });
  const csrfCookie = cookies(page).find((c) => c.startsWith("souk_csrf="));
  const jar = csrfCookie.split(";")[0];
  const csrf = csrfOf(await page.text());
  const form = new URLSearchParams({
    csrf, name: "Eve", email: `eve-${Date.now()}-${Math.random()}@example.com`, password: "correct horse battery",
  });
  const response = await fetch(`${shop.url}/register`, {
    method: "POST", body: form, redirect: "manual", headers: { ...headers, cookie: jar },
  });
  return { response, jar, csrf };
}

test("pages carry a policy without unsafe-inline and are not cached", { skip: why ?? false, timeout: 30000 }, async () => {
  const response = await fetch(`${shop.url}/`);
  assert.equal(response.status, 200);
  const policy = response.headers.get("content-security-policy");
  assert.match(policy, /default-src 'none'/);
  assert.match(policy, /script-src 'self'/);
  assert.doesNotMatch(policy, /unsafe-inline|unsafe-eval|https?:/);
  assert.equal(response.headers.get("cache-control"), "no-store");
  assert.equal(response.headers.get("x-content-type-options"), "nosniff");
  const html = await response.text();
  assert.doesNotMatch(html, /<script>|style=|\son[a-z]+=/, "no inline script, style or handler");
  assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//, "nothing loaded from elsewhere");
});

test("assets have fingerprinted names and are cached for a year", { skip: why ?? false, timeout: 30000 }, async () => {
  const html = await (await fetch(`${shop.url}/`)).text();
  const assets = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]);
  assert.equal(assets.length, 3, `${assets}`);
  for (const path of assets) {
    assert.match(path, /^\/assets\/[a-z]+\.[0-9a-f]{16}\.(css|js|svg)$/);
    const response = await fetch(`${shop.url}${path}`);
    assert.equal(response.status, 200, path);
    assert.equal(response.headers.get("cache-control"), "public, max-age=31536000, immutable");
  }
  const stale = await fetch(`${shop.url}/assets/app.0000000000000000.css`);
  assert.equal(stale.status, 404);
});

test("the session cookie is HttpOnly and SameSite=Lax, and Secure behind TLS", { skip: why ?? false, timeout: 30000 }, async () => {
  const plain = await register();
  assert.equal(plain.response.status, 303);
  const session = cookies(plain.response).find((c) => c.startsWith("souk_session="));
  assert.ok(session, "a session cookie");
  assert.match(session, /; HttpOnly/);
  assert.match(session, /; SameSite=Lax/);
  assert.match(session, /; Path=\//);
  assert.doesNotMatch(session, /Secure/);
  assert.doesNotMatch(plain.jar, /Secure/);

  const tls = await register({ "x-forwarded-proto": "https" });
  const secure = cookies(tls.response).find((c) => c.startsWith("souk_session="));
  assert.match(secure, /; Secure/);
});

test("a form without this browser's CSRF token changes nothing", { skip: why ?? false, timeout: 30000 }, async () => {
  const { response, jar, csrf } = await register();
  const session = cookies(response).find((c) => c.startsWith("souk_session=")).split(";")[0];
  const cookie = `${jar}; ${session}`;
  const post = (body, headers = {}) => fetch(`${shop.url}/logout`, {
    method: "POST", body: new URLSearchParams(body), redirect: "manual", headers: { cookie, ...headers },
  });
  for (const [what, body, headers] of [
    ["no token", {}, {}],
    ["another token", { csrf: "0".repeat(32) }, {}],
    ["the right token from another site", { csrf }, { origin: "https://evil.example" }],
  ]) {
    const refused = await post(body, headers);
    assert.equal(refused.status, 403, what);
    assert.ok(!cookies(refused).some((c) => c.startsWith("souk_session=")), `${what}: still signed in`);
  }
  const accepted = await post({ csrf });
  assert.equal(accepted.status, 303);
  assert.ok(cookies(accepted).some((c) => /^souk_session=;.*Max-Age=0/.test(c)), "signed out");
});

test("pages that need a session send visitors to log in and back", { skip: why ?? false, timeout: 30000 }, async () => {
  for (const path of ["/cart", "/orders", "/checkout", "/admin"]) {
    const response = await fetch(`${shop.url}${path}`, { redirect: "manual" });
    assert.equal(response.status, 303, path);
    assert.equal(response.headers.get("location"), `/login?next=${encodeURIComponent(path)}`);
  }
  const open = await fetch(`${shop.url}/login?next=https://evil.example/`);
  assert.doesNotMatch(await open.text(), /evil\.example/);
});
