// A shopper's whole journey in a real browser: register, find a product, add it to the cart,
// change the quantity, place the order and see it CONFIRMED without a reload, find it in the
// order history, cancel it; and the cart's other controls.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  adminToken, api, assertStayedInShop, missing, openBrowser, startShop, visit,
} from "./support.js";

const why = missing();
let shop;
let product;
let category;

before(async () => {
  if (why) return;
  shop = await startShop("shopper");
  const token = await adminToken(shop);
  category = await api(shop, "POST", "/api/products/categories", {
    token, body: { name: "Lighting", description: "Lamps and lights" },
  });
  product = await api(shop, "POST", "/api/products", {
    token,
    body: { name: "Brass lamp", description: "A warm desk lamp", price_cents: 1250, stock: 20, category_id: category.id },
  });
});

after(async () => {
  await shop?.stop();
});

test("a shopper registers, buys a lamp, sees it confirmed without a reload, then cancels it", { skip: why ?? false, timeout: 180000 }, async (t) => {
  const browser = await openBrowser(t);
  const { page } = browser;
  const name = "shopper";

  await page.goto(`${shop.url}/`);
  await visit(page, name, "home");
  await page.getByRole("link", { name: "Lighting" }).click();
  await page.getByRole("heading", { name: "Lighting" }).waitFor();
  await visit(page, name, "category");
  await page.getByRole("link", { name: "Brass lamp" }).click();
  await page.getByRole("heading", { name: "Brass lamp" }).waitFor();
  await assert.doesNotReject(page.getByText("$12.50").waitFor());
  await visit(page, name, "product");

  // Not signed in: adding to the cart asks to log in, and a new shopper registers from there.
  await page.getByRole("button", { name: "Add to cart" }).click();
  await page.getByRole("heading", { name: "Log in" }).waitFor();
  await visit(page, name, "login");
  await page.getByRole("link", { name: "Create an account" }).click();
  await page.getByRole("heading", { name: "Register" }).waitFor();
  await visit(page, name, "register");
  const email = `ada-${Date.now()}@example.com`;
  await page.getByLabel("Name", { exact: true }).fill("Ada");
  await page.getByLabel("Email", { exact: true }).fill(email);
  await page.getByLabel("Password", { exact: true }).fill("correct horse battery");
  await page.getByRole("button", { name: "Register" }).click();

  // Registered and signed in, back on the product.
  await page.getByRole("heading", { name: "Brass lamp" }).waitFor();
  await page.getByRole("button", { name: "Log out" }).waitFor();
  await page.getByLabel("Quantity", { exact: true }).fill("1");
  await page.getByRole("button", { name: "Add to cart" }).click();
  await page.getByRole("heading", { name: "Your cart" }).waitFor();
  await page.getByText("Total: $12.50").waitFor();
  await visit(page, name, "cart");

  await page.getByLabel("Quantity", { exact: true }).fill("2");
  await page.getByRole("button", { name: "Update" }).click();
  await page.getByText("Total: $25.00").waitFor();

  await page.getByRole("link", { name: "Checkout" }).click();
  await page.getByRole("heading", { name: "Checkout" }).waitFor();
  await visit(page, name, "checkout");
  await page.getByRole("button", { name: "Place order" }).click();
  await page.getByRole("heading", { name: /^Order / }).waitFor();
  const orderUrl = page.url();
  // A mark on this document: it is still there when the status changes, so no reload happened.
  await page.evaluate(() => { globalThis.stillTheSamePage = true; });
  const status = page.locator("#order-status");
  await assert.doesNotReject(
    page.waitForFunction(() => document.getElementById("order-status")?.textContent === "CONFIRMED", null, { timeout: 20000 }),
  );
  assert.equal(await status.textContent(), "CONFIRMED");
  assert.equal(await page.evaluate(() => globalThis.stillTheSamePage), true, "the page reloaded");
  assert.equal(page.url(), orderUrl);
  await visit(page, name, "order-confirmed");

  await page.getByRole("link", { name: "Orders", exact: true }).click();
  await page.getByRole("heading", { name: "Your orders" }).waitFor();
  const rows = page.locator("table.orders tbody tr");
  assert.equal(await rows.count(), 1);
  assert.equal(await rows.locator(".status").textContent(), "CONFIRMED");
  assert.match(await rows.textContent(), /\$25\.00/);
  await visit(page, name, "orders");

  await rows.getByRole("link").click();
  await page.getByRole("button", { name: "Cancel order" }).click();
  await page.waitForFunction(() => document.getElementById("order-status")?.textContent === "CANCELLED");
  await page.getByText("You cancelled this order.").waitFor();
  assert.equal(await page.getByRole("button", { name: "Cancel order" }).count(), 0);
  await visit(page, name, "order-cancelled");

  // The confirmed order emptied the cart; the other cart controls: remove a line, empty it.
  await page.getByRole("link", { name: "Cart", exact: true }).click();
  await page.getByText("Your cart is empty.").waitFor();
  for (const _ of [1, 2]) {
    await page.goto(`${shop.url}/products/${product.id}`);
    await page.getByRole("button", { name: "Add to cart" }).click();
    await page.getByRole("heading", { name: "Your cart" }).waitFor();
  }
  await page.getByText("Total: $25.00").waitFor();
  await page.getByRole("button", { name: "Remove" }).click();
  await page.getByText("Your cart is empty.").waitFor();
  await page.goto(`${shop.url}/products/${product.id}`);
  await page.getByRole("button", { name: "Add to cart" }).click();
  await page.getByRole("button", { name: "Empty cart" }).click();
  await page.getByText("Your cart is empty.").waitFor();

  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByRole("link", { name: "Log in" }).waitFor();
  await page.goto(`${shop.url}/orders`);
  await page.getByRole("heading", { name: "Log in" }).waitFor();

  assertStayedInShop(shop, browser);
});
