//! Who may say what on a shop's bus. Anyone who reached an open NATS could publish a
//! hand-made `order.created` and have stock reserved for an order that never existed; with
//! authentication each service connects as its own user, allowed to publish only the events
//! it owns (and its dead letters) and to receive only on its own inbox.
//!
//! This is the one definition of those permissions: the operator renders it into the NATS
//! configuration, `souk` connects with the matching user (`SOUK_NATS_USER`,
//! `SOUK_NATS_PASSWORD`), and a test runs it against a real `nats-server`.
//!
//! Every user may use the JetStream API (`$JS.API.>`: streams, consumers, pulls) and ack its
//! own consumer's messages; finer JetStream API permissions are a later step.

use std::fmt::Write as _;

use crate::{
    config::{Secret, ShopName},
    events,
};

/// A user and password for the shop's NATS.
#[derive(Debug, Clone)]
pub struct NatsCredentials {
    pub user: String,
    pub password: Secret<String>,
}

/// Who connects to NATS (a relayer connects as its service).
#[derive(Debug)]
pub struct BusUser {
    pub name: &'static str,
    /// The event families it publishes: `order.*` events come only from the order service,
    /// `stock.*` and `catalog.*` only from the product service.
    pub publishes: &'static [&'static str],
    /// Whether it consumes events through a durable consumer (JetStream API, acks, dead letters).
    pub consumes: bool,
    /// Event types it reads as they pass, without a consumer (the gateway's catalog cache).
    pub listens: &'static [&'static str],
}

pub const BUS_USERS: &[BusUser] = &[
    BusUser {
        name: "product",
        publishes: &["stock", "catalog"],
        consumes: true,
        listens: &[],
    },
    BusUser {
        name: "cart",
        publishes: &[],
        consumes: true,
        listens: &[],
    },
    BusUser {
        name: "order",
        publishes: &["order"],
        consumes: true,
        listens: &[],
    },
    BusUser {
        name: "gateway",
        publishes: &[],
        consumes: false,
        listens: &["catalog.changed"],
    },
];

/// The inbox prefix of a user: replies and pulled messages arrive under it, and nobody else
/// may subscribe there.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// One user's permissions on the shop's bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The permissions of `service` in `shop`, or `None` for a service that does not use NATS.
pub fn permissions(shop: &ShopName, service: &str) -> Option<Permissions> {
    let user = BUS_USERS.iter().find(|user| user.name == service)?;
    let stream = events::stream_name(shop);
    let mut publish: Vec<String> = user
        .publishes
        .iter()
        .map(|family| format!("{shop}.{family}.>"))
        .collect();
    if user.consumes {
        // Its consumer (named after the service) dead-letters what it cannot handle.
        publish.push(events::dead_letter_subject(shop, service));
        publish.push("$JS.API.>".into());
        publish.push(format!("$JS.ACK.{stream}.{service}.>"));
    }
    let mut subscribe = vec![format!("{}.>", inbox_prefix(service))];
    subscribe.extend(
        user.listens
            .iter()
            .map(|event_type| events::subject(shop, event_type)),
    );
    Some(Permissions { publish, subscribe })
}

/// The `authorization` block of a `nats-server` configuration for `shop`, with each
/// service's password (`passwords` in `BUS_USERS` order), plus an `admin` user allowed
/// everything (for the operator's own checks and for `souk up`).
pub fn server_authorization(
    shop: &ShopName,
    passwords: &[(&str, &Secret<String>)],
    admin_password: &Secret<String>,
) -> String {
    let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let list = |items: &[String]| {
        items
            .iter()
            .map(|item| quote(item))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::from("authorization {\n  users = [\n");
    let _ = writeln!(
        out,
        "    {{ user: \"admin\", password: {} }}",
        quote(admin_password.expose())
    );
    for (service, password) in passwords {
        let Some(permissions) = permissions(shop, service) else {
            continue;
        };
        // An empty allow list would allow everything: a user who publishes nothing is denied all.
        let publish = if permissions.publish.is_empty() {
            "deny: [\">\"]".to_owned()
        } else {
            format!("allow: [{}]", list(&permissions.publish))
        };
        let _ = writeln!(
            out,
            "    {{ user: {}, password: {}, permissions: {{ publish: {{ {publish} }}, subscribe: {{ allow: [{}] }} }} }}",
            quote(service),
            quote(password.expose()),
            list(&permissions.subscribe),
        );
    }
    out.push_str("  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_publishes_only_its_own_events() {
        let shop: ShopName = "s1".parse().expect("shop");
        let order = permissions(&shop, "order").expect("order");
        assert!(order.publish.contains(&"s1.order.>".to_owned()));
        assert!(!order.publish.iter().any(|s| s.starts_with("s1.stock")));
        let product = permissions(&shop, "product").expect("product");
        assert!(product.publish.contains(&"s1.stock.>".to_owned()));
        assert!(!product.publish.iter().any(|s| s.starts_with("s1.order")));
        let cart = permissions(&shop, "cart").expect("cart");
        assert_eq!(
            cart.publish
                .iter()
                .filter(|s| s.starts_with("s1."))
                .collect::<Vec<_>>(),
            ["s1.deadletter.cart"]
        );
        assert_eq!(cart.subscribe, ["_INBOX_cart.>"]);
        assert!(permissions(&shop, "payment").is_none());
    }

    #[test]
    fn the_catalog_is_announced_by_the_product_service_and_heard_by_the_gateway() {
        let shop: ShopName = "s1".parse().expect("shop");
        let product = permissions(&shop, "product").expect("product");
        assert!(product.publish.contains(&"s1.catalog.>".to_owned()));
        let gateway = permissions(&shop, "gateway").expect("gateway");
        assert!(
            gateway.publish.is_empty(),
            "the gateway publishes nothing: {gateway:?}"
        );
        assert_eq!(
            gateway.subscribe,
            ["_INBOX_gateway.>", "s1.catalog.changed"]
        );
    }

    #[test]
    fn the_server_configuration_names_every_user() {
        let shop: ShopName = "s1".parse().expect("shop");
        let secret = Secret::new("p\"w".to_owned());
        let config = server_authorization(&shop, &[("order", &secret), ("cart", &secret)], &secret);
        assert!(
            config.contains(r#"user: "order", password: "p\"w""#),
            "{config}"
        );
        assert!(config.contains(r#"user: "admin""#), "{config}");
        assert!(config.contains(r#""s1.order.>""#), "{config}");
        let gateway = server_authorization(&shop, &[("gateway", &secret)], &secret);
        assert!(gateway.contains(r#"publish: { deny: [">"] }"#), "{gateway}");
    }
}
