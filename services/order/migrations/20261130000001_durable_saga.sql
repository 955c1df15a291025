-- The saga's steps that call another service are durable. A step is committed as the order's
-- `saga_step` before its call is made (no transaction is open during the call), and its outcome
-- is recorded by a second transaction; a worker takes on again every order left in one of these
-- steps, so a crash at any instant ends in a consistent order.
--   charging:  stock is reserved, the payment is to be charged (then completed or compensated).
--   refunding: the order is to be refunded or voided (then compensated, for `cancel_reason`).
alter table orders drop constraint orders_saga_step_check;
alter table orders add constraint orders_saga_step_check
    check (saga_step in ('reserving_stock', 'charging', 'refunding', 'completed', 'compensated'));

-- Why an order being refunded will be cancelled (its failure_reason once it is).
alter table orders add column cancel_reason text
    check (cancel_reason in ('out_of_stock', 'payment_declined', 'timeout', 'cancelled_by_user'));
alter table orders add constraint orders_refunding_has_a_reason
    check (saga_step <> 'refunding' or cancel_reason is not null);

-- When a worker may take the order's step on next: a lease while someone carries it out, a
-- backoff after a failed call.
alter table orders add column step_due_at timestamptz not null default now();
alter table orders add column step_attempts integer not null default 0;

-- Steps to carry out.
create index orders_in_flight on orders (step_due_at) where saga_step in ('charging', 'refunding');
