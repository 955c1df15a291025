-- One checkout's SQL, as the saga runs it across the services' databases, for pgbench: the limit
-- the `limits` bench compares the shop's checkout rate with. Each service's tables live in a
-- schema of their own here (order_db, product_db, payment_db, cart_db) of one scratch database;
-- :product is a product with ample stock, made by the bench. One pgbench transaction is one saga
-- (a customer fills a cart and checks out; its order is confirmed; the cart emptied); a relayer's
-- work is one insert and one delete of the outbox row per event.
--
-- Kept in step with the order service by tests/tests/saga_sql.rs: every query of the order
-- service (services/order/.sqlx) is named below on an `-- order:` line (those the checkout runs,
-- each above its statement) or an `-- order, not in a checkout:` line. When that test fails,
-- the order service's SQL changed: update these lines to the texts it prints, and the statements
-- under them to do what the service now does.
--
-- order, not in a checkout: update orders set saga_step = 'refunding', cancel_reason = 'timeout', step_due_at = now(), step_attempts = 0, updated_at = now() where status = 'PENDING' and saga_step in ('reserving_stock', 'charging') and deadline < now() returning id
-- order, not in a checkout: update orders set saga_step = 'refunding', cancel_reason = $2, step_due_at = now() + make_interval(secs => $3), step_attempts = 0, updated_at = now() where id = $1
-- order, not in a checkout: update orders set step_due_at = now() + least(0.1 * power(2, least(step_attempts, 10)), 5) * interval '1 second', step_attempts = step_attempts + 1 where id = $1 and saga_step = $2
-- order, not in a checkout: select id from orders where user_id = $1 and idempotency_key = $2
-- order, not in a checkout: update orders set step_due_at = now() + make_interval(secs => $2) where id in ( select id from orders where saga_step in ('charging', 'refunding') and step_due_at <= now() order by step_due_at limit $1 for update skip locked) returning id, user_id, status, saga_step, cancel_reason, failure_reason, total_cents
-- order, not in a checkout: select id, user_id, status, failure_reason, total_cents, created_at, updated_at from orders where user_id = $1 order by created_at desc, id desc limit $2
-- order, not in a checkout: select order_id, product_id, name, unit_price_cents, quantity from order_items where order_id = any($1) order by created_at, product_id
-- order, not in a checkout: update orders set status = 'CANCELLED', failure_reason = $2, cancel_reason = null, saga_step = 'compensated', updated_at = now() where id = $1

select gen_random_uuid() as user_id, gen_random_uuid() as order_id \gset

-- The customer's cart (cart service): look, then add the product.
select product_id, quantity from cart_db.cart_items where user_id = ':user_id' order by created_at, product_id;
begin;
insert into cart_db.carts (user_id) values (':user_id') on conflict (user_id) do update set updated_at = now();
insert into cart_db.cart_items (user_id, product_id, quantity) values (':user_id', ':product', 1) on conflict (user_id, product_id) do update set quantity = excluded.quantity, updated_at = now();
commit;

-- POST /api/orders: the order service prices the cart (cart service, which asks the product
-- service), then writes the order and order.created in one transaction.
select product_id, quantity from cart_db.cart_items where user_id = ':user_id' order by created_at, product_id;
select id, name, description, price_cents, currency, stock, category_id, created_at, updated_at, version from product_db.products where id = any(array[':product']::uuid[]);
begin;
-- order: insert into orders (id, user_id, status, total_cents, idempotency_key, saga_step, deadline) values ($1, $2, 'PENDING', $3, $4, 'reserving_stock', $5) on conflict (user_id, idempotency_key) where idempotency_key is not null do nothing returning created_at, updated_at
insert into order_db.orders (id, user_id, status, total_cents, idempotency_key, saga_step, deadline) values (':order_id', ':user_id', 'PENDING', 100, null, 'reserving_stock', now() + interval '30 seconds') on conflict (user_id, idempotency_key) where idempotency_key is not null do nothing returning created_at, updated_at;
-- order: insert into order_items (order_id, product_id, name, unit_price_cents, quantity) select $1, * from unnest($2::uuid[], $3::text[], $4::bigint[], $5::bigint[])
insert into order_db.order_items (order_id, product_id, name, unit_price_cents, quantity) select ':order_id', * from unnest(array[':product']::uuid[], array['Bench']::text[], array[100]::bigint[], array[1]::bigint[]);
insert into order_db.outbox_events (id, subject, payload) values (gen_random_uuid(), 'bench.order.created', '\x00') returning seq as created_seq \gset
commit;
delete from order_db.outbox_events where seq = :created_seq;

-- order.created (product service): take the stock, answer stock.reserved and catalog.changed.
begin;
insert into product_db.processed_events (event_id, event_type) values (gen_random_uuid(), 'order.created') on conflict do nothing;
select status from product_db.reservations where order_id = ':order_id' for update;
savepoint attempt;
update product_db.products set stock = stock - 1, version = version + 1, updated_at = now() where id = ':product' and stock >= 1;
release savepoint attempt;
insert into product_db.reservations (order_id, status) values (':order_id', 'reserved');
insert into product_db.reservation_lines (order_id, product_id, quantity) select ':order_id', * from unnest(array[':product']::uuid[], array[1]::bigint[]);
insert into product_db.outbox_events (id, subject, payload) values (gen_random_uuid(), 'bench.catalog.changed', '\x00') returning seq as changed_seq \gset
insert into product_db.outbox_events (id, subject, payload) values (gen_random_uuid(), 'bench.stock.reserved', '\x00') returning seq as reserved_seq \gset
commit;
delete from product_db.outbox_events where seq = any(array[:changed_seq, :reserved_seq]::bigint[]);

-- stock.reserved (order service): lock the order and commit the intent to charge (leased to
-- this replica for 3 s).
begin;
insert into order_db.processed_events (event_id, event_type) values (gen_random_uuid(), 'stock.reserved') on conflict do nothing;
-- order: select id, user_id, status, saga_step, cancel_reason, failure_reason, total_cents from orders where id = $1 for update
select id, user_id, status, saga_step, cancel_reason, failure_reason, total_cents from order_db.orders where id = ':order_id' for update;
-- order: update orders set saga_step = 'charging', step_due_at = now() + make_interval(secs => $2), step_attempts = 0, updated_at = now() where id = $1
update order_db.orders set saga_step = 'charging', step_due_at = now() + make_interval(secs => 3), step_attempts = 0, updated_at = now() where id = ':order_id';
commit;

-- Once that commits, the consumer hands the order to the saga's worker, which charges outside
-- any transaction (payment service), then records the outcome: CONFIRMED, with
-- order.confirmed carrying the order's lines.
insert into payment_db.payments (id, order_id, user_id, amount_cents, status, decline_reason) values (gen_random_uuid(), ':order_id', ':user_id', 100, 'captured', null) on conflict (order_id) do nothing returning id, order_id, user_id, amount_cents, status, decline_reason, created_at, updated_at;
begin;
select id, user_id, status, saga_step, cancel_reason, failure_reason, total_cents from order_db.orders where id = ':order_id' for update;
-- order: update orders set status = 'CONFIRMED', saga_step = 'completed', updated_at = now() where id = $1
update order_db.orders set status = 'CONFIRMED', saga_step = 'completed', updated_at = now() where id = ':order_id';
-- order: select product_id, quantity from order_items where order_id = $1 order by product_id
select product_id, quantity from order_db.order_items where order_id = ':order_id' order by product_id;
insert into order_db.outbox_events (id, subject, payload) values (gen_random_uuid(), 'bench.order.confirmed', '\x00') returning seq as confirmed_seq \gset
commit;
delete from order_db.outbox_events where seq = :confirmed_seq;

-- order.confirmed (cart service): take the ordered lines out of the cart.
begin;
insert into cart_db.processed_events (event_id, event_type) values (gen_random_uuid(), 'order.confirmed') on conflict do nothing;
with ordered as (select * from unnest(array[':product']::uuid[], array[1]::bigint[]) as o (product_id, quantity)), gone as (delete from cart_db.cart_items c using ordered o where c.user_id = ':user_id' and c.product_id = o.product_id and c.quantity <= o.quantity) update cart_db.cart_items c set quantity = c.quantity - o.quantity, updated_at = now() from ordered o where c.user_id = ':user_id' and c.product_id = o.product_id and c.quantity > o.quantity;
commit;

-- The customer reads the order, CONFIRMED.
-- order: select id, user_id, status, failure_reason, total_cents, created_at, updated_at from orders where id = $1
select id, user_id, status, failure_reason, total_cents, created_at, updated_at from order_db.orders where id = ':order_id';
