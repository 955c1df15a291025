-- Simulated card payments, one per order at most: the unique order id makes every charge and
-- refund idempotent.
create table payments (
    id             uuid        primary key,
    order_id       uuid        not null unique,
    user_id        uuid,
    amount_cents   bigint      not null check (amount_cents >= 0),
    status         text        not null check (status in ('captured', 'declined', 'refunded', 'voided')),
    decline_reason text,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now()
);
