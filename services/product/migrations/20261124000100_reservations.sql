-- Stock held for orders by the checkout saga: one row per order the product service has heard
-- of, whatever it decided, so that a redelivered or late event decides nothing twice.
--   reserved:  every line's stock was taken;      released:  given back (order cancelled);
--   rejected:  some line lacked stock, none taken; cancelled: the order was cancelled before its
--   order.created arrived (a later order.created reserves nothing).
create table reservations (
    order_id    uuid        primary key,
    status      text        not null check (status in ('reserved', 'released', 'rejected', 'cancelled')),
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);

create table reservation_lines (
    order_id    uuid        not null references reservations (order_id) on delete cascade,
    product_id  uuid        not null,
    quantity    bigint      not null check (quantity > 0),
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    primary key (order_id, product_id)
);
