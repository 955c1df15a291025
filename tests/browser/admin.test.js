// The admin's journey in a real browser: log in, create a category and a product in it, set its
// stock, edit it; delete what is not wanted; and a shopper, in another browser, buys the new
// product and sees the order CONFIRMED.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { assertStayedInShop, missing, openBrowser, startShop, visit } from "./support.js";

const why = missing();
let shop;

before(async () => {
  if (!why) shop = await startShop("admin");
});

after(async () => {
  await shop?.stop();
});

test("an admin creates a product that a shopper then buys", { skip: why ?? false, timeout: 180000 }, async (t) => {
  const admin = await openBrowser(t);
  const page = admin.page;
  const name = "admin";

  await page.goto(`${shop.url}/login`);
  await page.getByLabel("Email", { exact: true }).fill(shop.admin.email);
  await page.getByLabel("Password", { exact: true }).fill(shop.admin.password);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("link", { name: "Admin" }).click();
  await page.getByRole("heading", { name: "Admin", exact: true }).waitFor();
  await visit(page, name, "admin");

  // Categories: create two, rename one, delete the other.
  for (const category of ["Kitchen", "Garden"]) {
    await page.getByLabel("Name", { exact: true }).fill(category);
    await page.getByLabel("Description", { exact: true }).fill(`All things ${category.toLowerCase()}`);
    await page.getByRole("button", { name: "Create category" }).click();
    await page.getByRole("link", { name: `Edit ${category}` }).waitFor();
  }
  await page.getByRole("link", { name: "Edit Kitchen" }).click();
  await page.getByRole("heading", { name: "Edit Kitchen" }).waitFor();
  await visit(page, name, "edit-category");
  await page.getByLabel("Name", { exact: true }).fill("Kitchenware");
  await page.getByRole("button", { name: "Save category" }).click();
  await page.getByRole("link", { name: "Edit Kitchenware" }).waitFor();
  await page.getByRole("button", { name: "Delete Garden" }).click();
  await page.getByRole("heading", { name: "Admin", exact: true }).waitFor();
  assert.equal(await page.getByRole("link", { name: "Edit Garden" }).count(), 0);

  // A product in that category.
  await page.getByRole("link", { name: "New product" }).click();
  await page.getByRole("heading", { name: "New product" }).waitFor();
  await visit(page, name, "new-product");
  await page.getByLabel("Name", { exact: true }).fill("Copper kettle");
  await page.getByLabel("Description", { exact: true }).fill("Boils water, beautifully");
  await page.getByLabel("Price", { exact: true }).fill("39.90");
  await page.getByLabel("Stock", { exact: true }).fill("3");
  await page.getByLabel("Category", { exact: true }).selectOption({ label: "Kitchenware" });
  await page.getByRole("button", { name: "Create product" }).click();
  await page.getByRole("heading", { name: "Edit Copper kettle" }).waitFor();
  await visit(page, name, "edit-product");
  assert.equal(await page.getByLabel("Price", { exact: true }).inputValue(), "39.90");

  // Edit it, then set its stock from the list.
  await page.getByLabel("Description", { exact: true }).fill("Boils water, beautifully, on any stove");
  await page.getByRole("button", { name: "Save product" }).click();
  await page.getByRole("heading", { name: "Edit Copper kettle" }).waitFor();
  assert.equal(await page.getByLabel("Description", { exact: true }).inputValue(), "Boils water, beautifully, on any stove");
  await page.getByRole("link", { name: "Back to admin" }).click();
  await page.getByLabel("Stock of Copper kettle", { exact: true }).fill("7");
  await page.getByRole("button", { name: "Set stock of Copper kettle" }).click();
  await page.getByRole("heading", { name: "Admin", exact: true }).waitFor();
  assert.equal(await page.getByLabel("Stock of Copper kettle", { exact: true }).inputValue(), "7");
  await visit(page, name, "admin-with-product");

  // A product created by mistake goes away.
  await page.getByRole("link", { name: "New product" }).click();
  await page.getByLabel("Name", { exact: true }).fill("Mistake");
  await page.getByLabel("Price", { exact: true }).fill("1");
  await page.getByLabel("Stock", { exact: true }).fill("1");
  await page.getByRole("button", { name: "Create product" }).click();
  await page.getByRole("heading", { name: "Edit Mistake" }).waitFor();
  await page.getByRole("link", { name: "Back to admin" }).click();
  await page.getByRole("button", { name: "Delete Mistake" }).click();
  await page.getByRole("heading", { name: "Admin", exact: true }).waitFor();
  assert.equal(await page.getByRole("link", { name: "Edit Mistake" }).count(), 0);

  // A price the shop cannot read is refused with a page that says why.
  await page.getByRole("link", { name: "New product" }).click();
  await page.getByLabel("Name", { exact: true }).fill("Bad price");
  await page.getByLabel("Price", { exact: true }).evaluate((input) => input.removeAttribute("pattern"));
  await page.getByLabel("Price", { exact: true }).fill("1.234");
  await page.getByLabel("Stock", { exact: true }).fill("1");
  await page.getByRole("button", { name: "Create product" }).click();
  await page.getByText("Price must be an amount like 12.50.").waitFor();
  await visit(page, name, "bad-price");
  assertStayedInShop(shop, admin);

  // A shopper, in a browser of their own, finds the new product and buys it.
  const shopper = await openBrowser(t);
  const buyer = shopper.page;
  await buyer.goto(`${shop.url}/`);
  await buyer.getByRole("link", { name: "Kitchenware" }).click();
  await buyer.getByRole("link", { name: "Copper kettle" }).click();
  await buyer.getByText("$39.90").waitFor();
  await buyer.getByText("In stock").waitFor();
  await buyer.getByRole("link", { name: "Register" }).click();
  await buyer.getByLabel("Name", { exact: true }).fill("Grace");
  await buyer.getByLabel("Email", { exact: true }).fill(`grace-${Date.now()}@example.com`);
  await buyer.getByLabel("Password", { exact: true }).fill("correct horse battery");
  await buyer.getByRole("button", { name: "Register" }).click();
  await buyer.getByRole("heading", { name: "Copper kettle" }).waitFor();
  await buyer.getByRole("button", { name: "Add to cart" }).click();
  await buyer.getByRole("link", { name: "Checkout" }).click();
  await buyer.getByRole("button", { name: "Place order" }).click();
  await buyer.waitForFunction(() => document.getElementById("order-status")?.textContent === "CONFIRMED", null, { timeout: 20000 });
  await visit(buyer, name, "shopper-order-confirmed");
  assertStayedInShop(shop, shopper);

  // The admin sees the stock the order took.
  await page.goto(`${shop.url}/admin`);
  assert.equal(await page.getByLabel("Stock of Copper kettle", { exact: true }).inputValue(), "6");

  // A shopper is not an admin.
  await buyer.goto(`${shop.url}/admin`);
  await buyer.getByRole("heading", { name: "Not allowed" }).waitFor();
  assert.equal(await buyer.getByRole("link", { name: "Admin" }).count(), 0);
});
