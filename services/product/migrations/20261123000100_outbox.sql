-- The transactional outbox: events written in the same transaction as the change they describe,
-- drained into JetStream by the relayer (which deletes what the stream acknowledged).
-- This file is the reference: every service that emits events carries an identical copy in its
-- own migrations (a test in souk-shared checks that they match).
create table outbox_events (
    seq         bigserial   primary key,
    id          uuid        not null unique,
    subject     text        not null,
    payload     bytea       not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);
