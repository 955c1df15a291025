-- One cart per user, and its lines. Products belong to the product service: a line holds only
-- the product's id and the quantity; names and prices are read at their current values.

create table carts (
    user_id    uuid        primary key,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create table cart_items (
    user_id    uuid        not null references carts (user_id) on delete cascade,
    product_id uuid        not null,
    quantity   bigint      not null constraint cart_items_quantity_check check (quantity between 1 and 1000000),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (user_id, product_id)
);
