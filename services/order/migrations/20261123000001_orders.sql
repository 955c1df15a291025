-- Orders and the state of their checkout saga. The saga's state is these rows (status, step,
-- deadline), so any replica can carry it on after a crash.
create table orders (
    id              uuid        primary key,
    user_id         uuid        not null,
    status          text        not null check (status in ('PENDING', 'CONFIRMED', 'CANCELLED')),
    failure_reason  text        check (failure_reason in ('out_of_stock', 'payment_declined', 'timeout', 'cancelled_by_user')),
    total_cents     bigint      not null check (total_cents >= 0),
    idempotency_key text        check (char_length(idempotency_key) between 1 and 255),
    -- reserving_stock: waiting for stock.reserved/stock.rejected; then completed or compensated.
    saga_step       text        not null check (saga_step in ('reserving_stock', 'completed', 'compensated')),
    deadline        timestamptz not null,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    check ((status = 'CANCELLED') = (failure_reason is not null))
);

-- The same key from the same user is the same order.
create unique index orders_idempotency_key on orders (user_id, idempotency_key) where idempotency_key is not null;
-- A user's orders, newest first.
create index orders_by_user on orders (user_id, created_at desc, id desc);
-- Sagas to time out.
create index orders_pending_by_deadline on orders (deadline) where status = 'PENDING';

create table order_items (
    order_id         uuid        not null references orders (id) on delete cascade,
    product_id       uuid        not null,
    name             text        not null,
    unit_price_cents bigint      not null check (unit_price_cents >= 0),
    quantity         bigint      not null check (quantity > 0),
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    primary key (order_id, product_id)
);
