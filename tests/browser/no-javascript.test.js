// Browsing and buying with JavaScript off: every step is a form and a redirect, and the order
// page refreshes itself until the order is decided. Sending the same "Place order" form twice
// (a double click that got through, a resend) buys once.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  adminToken, api, assertStayedInShop, eventually, missing, openBrowser, startShop, visit,
} from "./support.js";

const why = missing();
let shop;

before(async () => {
  if (why) return;
  shop = await startShop("no-javascript");
  const token = await adminToken(shop);
  const category = await api(shop, "POST", "/api/products/categories", { token, body: { name: "Books" } });
  await api(shop, "POST", "/api/products", {
    token,
    body: { name: "Field guide", description: "Birds of the coast", price_cents: 1800, stock: 10, category_id: category.id },
  });
});

after(async () => {
  await shop?.stop();
});

test("a shopper with JavaScript off buys once, however often the order form is sent", { skip: why ?? false, timeout: 180000 }, async (t) => {
  const browser = await openBrowser(t, { javaScript: false });
  const { page } = browser;
  const name = "no-javascript";

  await page.goto(`${shop.url}/`);
  await page.getByRole("link", { name: "Register" }).click();
  await page.getByLabel("Name", { exact: true }).fill("Lin");
  await page.getByLabel("Email", { exact: true }).fill(`lin-${Date.now()}@example.com`);
  await page.getByLabel("Password", { exact: true }).fill("correct horse battery");
  await page.getByRole("button", { name: "Register" }).click();
  await page.getByRole("button", { name: "Log out" }).waitFor();

  await page.getByRole("link", { name: "Books" }).click();
  await page.getByRole("link", { name: "Field guide" }).click();
  await page.getByLabel("Quantity", { exact: true }).fill("3");
  await page.getByRole("button", { name: "Add to cart" }).click();
  await page.getByText("Total: $54.00").waitFor();
  await page.getByLabel("Quantity", { exact: true }).fill("2");
  await page.getByRole("button", { name: "Update" }).click();
  await page.getByText("Total: $36.00").waitFor();
  await page.getByRole("link", { name: "Checkout" }).click();
  await page.getByRole("heading", { name: "Checkout" }).waitFor();
  await visit(page, name, "checkout");

  // The form as rendered, sent twice more beside the click: the same key each time.
  const form = {
    csrf: await page.locator("input[name=csrf]").first().inputValue(),
    idempotency_key: await page.locator("input[name=idempotency_key]").inputValue(),
  };
  await page.getByRole("button", { name: "Place order" }).click();
  await page.getByRole("heading", { name: /^Order / }).waitFor();
  const orderUrl = page.url();
  for (const _ of [1, 2]) {
    const again = await page.request.post(`${shop.url}/checkout`, { form, maxRedirects: 0 });
    assert.equal(again.status(), 303);
    assert.equal(new URL(again.headers().location, shop.url).href, orderUrl);
  }

  // No script runs, yet the page comes back by itself until the order is decided.
  await eventually("the order reads CONFIRMED", 30000, async () =>
    (await page.locator("#order-status").textContent()) === "CONFIRMED");
  await visit(page, name, "order-confirmed");

  await page.getByRole("link", { name: "Orders", exact: true }).click();
  const rows = page.locator("table.orders tbody tr");
  assert.equal(await rows.count(), 1, "one order, however often the form was sent");
  assert.equal(await rows.locator(".status").textContent(), "CONFIRMED");
  await visit(page, name, "orders");

  await rows.getByRole("link").click();
  await page.getByRole("button", { name: "Cancel order" }).click();
  await page.getByText("CANCELLED", { exact: true }).waitFor();
  await page.getByText("You cancelled this order.").waitFor();

  assertStayedInShop(shop, browser);
});
