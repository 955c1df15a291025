-- The inbox: ids of the events a service has handled, inserted in the handler's own transaction,
-- so that a redelivered event is recognised and skipped.
-- This file is the reference: every service that consumes events carries an identical copy in
-- its own migrations (a test in souk-shared checks that they match).
create table processed_events (
    event_id    uuid        primary key,
    event_type  text        not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);
