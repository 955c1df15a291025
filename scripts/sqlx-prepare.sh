#!/usr/bin/env bash
# Regenerates the sqlx offline query data (`services/<svc>/.sqlx/`) of every service with
# migrations, against a scratch database per service on the local PostgreSQL.
#   scripts/sqlx-prepare.sh          rewrite the committed data
#   scripts/sqlx-prepare.sh --check  fail when the committed data is not what the code needs
#   scripts/sqlx-prepare.sh [--check] user cart   only these services
set -euo pipefail
cd "$(dirname "$0")/.."

export PGOPTIONS="-c client_min_messages=warning"
server=${SOUK_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
base=${server%/*}
check=false
if [[ ${1:-} == --check ]]; then
  check=true
  shift
fi
only=" $* "

status=0
for dir in services/*/; do
  svc=$(basename "$dir")
  # The relayer works on the outbox table, whose reference schema lives in shared.
  migrations=${dir}migrations
  [[ $svc == relayer ]] && migrations=services/shared/migrations
  compgen -G "$migrations/*.sql" >/dev/null || continue
  [[ $only == "  " || $only == *" $svc "* ]] || continue
  db="sqlx_prepare_${svc}_$$"
  psql -q "$server" -c "drop database if exists $db" -c "create database $db" >/dev/null
  for migration in "$migrations"/*.sql; do
    psql -q -v ON_ERROR_STOP=1 -1 "$base/$db" -f "$migration" >/dev/null
  done
  out=$(mktemp -d)
  # Dependencies first, from their own committed data, so that only this crate goes online
  # below (the crate itself may fail here: its data is what we are making).
  SQLX_OFFLINE=true cargo check -q -p "souk-$svc" --lib >/dev/null 2>&1 || true
  # Touch the crate so its query macros run again, online, writing their data to $out.
  touch "$dir"src/lib.rs
  DATABASE_URL="$base/$db" SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$out" \
    cargo check -q -p "souk-$svc" --lib
  touch "$dir"src/lib.rs
  psql -q "$server" -c "drop database $db" >/dev/null
  if $check; then
    if ! diff -r "$out" "$dir.sqlx" >/dev/null 2>&1; then
      echo "sqlx offline data of souk-$svc is stale: run scripts/sqlx-prepare.sh" >&2
      diff -r "$out" "$dir.sqlx" >&2 || true
      status=1
    fi
  else
    rm -rf "$dir.sqlx"
    mkdir -p "$dir.sqlx"
    cp "$out"/*.json "$dir.sqlx"/ 2>/dev/null || true
  fi
  rm -rf "$out"
done
exit $status
