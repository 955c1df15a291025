//! `tests/benches/saga.sql` (the checkout's limit in the `limits` bench) is the saga's own SQL:
//! every query of the order service is named in it, and it names no query the service lost.
//! The order service's queries are read from its sqlx offline data (`services/order/.sqlx`),
//! which `scripts/sqlx-prepare.sh --check` keeps current with its code.

use std::collections::BTreeSet;

fn normalized(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn order_service_queries() -> BTreeSet<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../services/order/.sqlx");
    std::fs::read_dir(dir)
        .expect("the order service's .sqlx")
        .map(|entry| {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
            let data: serde_json::Value = serde_json::from_str(&text).expect("json");
            normalized(data["query"].as_str().expect("query"))
        })
        .collect()
}

fn queries_named_in_the_script() -> BTreeSet<String> {
    include_str!("../benches/saga.sql")
        .lines()
        .filter_map(|line| {
            line.strip_prefix("-- order: ")
                .or_else(|| line.strip_prefix("-- order, not in a checkout: "))
        })
        .map(normalized)
        .collect()
}

#[test]
fn the_checkout_bench_runs_the_order_services_current_sql() {
    let service = order_service_queries();
    let script = queries_named_in_the_script();
    assert!(
        !service.is_empty(),
        "no queries found in services/order/.sqlx"
    );
    let missing: Vec<_> = service.difference(&script).collect();
    let gone: Vec<_> = script.difference(&service).collect();
    assert!(
        missing.is_empty() && gone.is_empty(),
        "tests/benches/saga.sql is out of step with the order service's SQL.\n\
         Name each new query on an `-- order:` line above the statement that does it (or on an \
         `-- order, not in a checkout:` line), rewrite the statements for what changed, and drop \
         the lines of queries that are gone.\n\
         New or changed in the service:\n  {}\n\
         Named in saga.sql but no longer in the service:\n  {}",
        missing
            .iter()
            .map(|q| q.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        gone.iter()
            .map(|q| q.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
    );
}
