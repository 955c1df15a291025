-- A product's version goes up by one on every write to it (an admin's update, stock taken or
-- given back), so an update made from an earlier read can be refused instead of undoing a
-- reservation made in between (`UpdateProductRequest.if_version`).
alter table products add column version bigint not null default 1;
