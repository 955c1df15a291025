-- The catalog: categories and products. Money is bigint cents; stock never goes below zero.

create table categories (
    id          uuid        primary key,
    name        text        not null,
    description text        not null default '',
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);

-- Category names are unique case-insensitively.
create unique index categories_name_key on categories (lower(name));

create table products (
    id          uuid        primary key,
    name        text        not null,
    description text        not null default '',
    price_cents bigint      not null constraint products_price_check check (price_cents >= 0),
    currency    text        not null default 'USD' constraint products_currency_check check (currency = 'USD'),
    stock       bigint      not null constraint products_stock_check check (stock >= 0),
    -- A category that still has products cannot be deleted.
    category_id uuid        constraint products_category_fkey references categories (id) on delete restrict,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);

-- The listing order (newest first, ties broken by id), for all products and per category.
-- The second index also serves the foreign key check when a category is deleted.
create index products_listing_idx on products (created_at desc, id desc);
create index products_category_listing_idx on products (category_id, created_at desc, id desc);
