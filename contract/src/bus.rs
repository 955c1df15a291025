//! Who may say what on a shop's bus. Anyone who reached an open NATS could publish a
//! hand-made `order.created` and have stock reserved for an order that never existed; with
//! authentication each service connects as its own user, allowed to publish only the events
//! it owns (and its dead letters) and to receive only on its own inbox.
//!
//! This is the one definition of those permissions: the operator renders it into the managed
//! NATS's configuration, `souk` connects with the matching user ([`crate::env::NATS_USER`],
//! [`crate::env::NATS_PASSWORD`]), and the e2e suite runs it against a real `nats-server`.
//!
//! JetStream's API is allowed subject by subject, never `$JS.API.>`: a service may look at
//! the shop's stream and create it when missing (the same configuration every service asks
//! for; changing, purging or deleting it is nobody's right), create, update and look at its
//! own durable consumer (named after the service), pull from it and acknowledge its messages.
//! It cannot touch another service's consumer, so one compromised service cannot delete the
//! consumer another one depends on, nor read through it.

/// The shop's stream: every subject of the shop, one stream per shop (`<SHOP>_EVENTS`).
pub fn stream_name(shop: &str) -> String {
    format!("{}_EVENTS", shop.to_ascii_uppercase())
}

/// The subject an event type (`order.created`) travels on in this shop.
pub fn subject(shop: &str, event_type: &str) -> String {
    format!("{shop}.{event_type}")
}

/// Where a consumer sends what it could not handle.
pub fn dead_letter_subject(shop: &str, consumer: &str) -> String {
    format!("{shop}.deadletter.{consumer}")
}

/// The inbox prefix of a user: replies and pulled messages arrive under it, and nobody else
/// may subscribe there.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// Who connects to NATS (a relayer connects as its service).
#[derive(Debug)]
pub struct BusUser {
    pub name: &'static str,
    /// The event families it publishes: `order.*` events come only from the order service,
    /// `stock.*` and `catalog.*` only from the product service.
    pub publishes: &'static [&'static str],
    /// Whether it consumes events through its durable consumer (named after it).
    pub consumes: bool,
    /// Event types it reads as they pass, without a consumer (the gateway's catalog cache).
    pub listens: &'static [&'static str],
}

impl BusUser {
    /// Whether it uses JetStream at all (the stream; a consumer or publishing with acks).
    fn uses_jetstream(&self) -> bool {
        self.consumes || !self.publishes.is_empty()
    }
}

/// Every user of a shop's bus but [`ADMIN_USER`].
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

/// A user allowed everything: for people looking at the bus (the `nats` CLI) and for `souk up`,
/// which runs every service in one process over one connection.
pub const ADMIN_USER: &str = "admin";

/// One user's permissions on the shop's bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The permissions of `service` in `shop`, or `None` for a service that does not use NATS.
pub fn permissions(shop: &str, service: &str) -> Option<Permissions> {
    let user = BUS_USERS.iter().find(|user| user.name == service)?;
    let stream = stream_name(shop);
    let mut publish: Vec<String> = user
        .publishes
        .iter()
        .map(|family| format!("{shop}.{family}.>"))
        .collect();
    if user.uses_jetstream() {
        // `get_or_create_stream`: look, and create when missing. Creating an existing stream
        // with another configuration fails; updating, purging, deleting are not allowed.
        publish.push(format!("$JS.API.STREAM.INFO.{stream}"));
        publish.push(format!("$JS.API.STREAM.CREATE.{stream}"));
    }
    if user.consumes {
        // Its consumer (named after the service) dead-letters what it cannot handle.
        publish.push(dead_letter_subject(shop, service));
        // Create or update (`CREATE.<stream>.<name>`, and `.<filter>` with one filter subject).
        publish.push(format!("$JS.API.CONSUMER.CREATE.{stream}.{service}"));
        publish.push(format!("$JS.API.CONSUMER.CREATE.{stream}.{service}.>"));
        publish.push(format!("$JS.API.CONSUMER.INFO.{stream}.{service}"));
        publish.push(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{service}"));
        // Ack, nak, term and in-progress of its own consumer's messages.
        publish.push(format!("$JS.ACK.{stream}.{service}.>"));
    }
    let mut subscribe = vec![format!("{}.>", inbox_prefix(service))];
    subscribe.extend(
        user.listens
            .iter()
            .map(|event_type| subject(shop, event_type)),
    );
    Some(Permissions { publish, subscribe })
}

/// How the server configuration gives a user's password.
#[derive(Debug, Clone, Copy)]
pub enum Password<'a> {
    /// The password (or its bcrypt hash) itself, written into the configuration.
    Literal(&'a str),
    /// An environment variable of the `nats-server` process holding it (or its bcrypt hash):
    /// the configuration holds no secret.
    Environment(&'a str),
}

impl Password<'_> {
    fn render(self) -> String {
        match self {
            Self::Literal(password) => quote(password),
            Self::Environment(variable) => format!("${variable}"),
        }
    }
}

/// The environment variable the managed NATS reads `user`'s password (hash) from:
/// `SOUK_NATS_PASSWORD_<USER>`.
pub fn password_variable(user: &str) -> String {
    format!(
        "{}_{}",
        crate::env::NATS_PASSWORD,
        user.to_ascii_uppercase()
    )
}

/// The `authorization` block of a `nats-server` configuration for `shop`: [`ADMIN_USER`], then
/// every user of [`BUS_USERS`] with its permissions, each with `password(user)`.
pub fn server_authorization<'a>(shop: &str, password: impl Fn(&str) -> Password<'a>) -> String {
    let list = |items: &[String]| {
        items
            .iter()
            .map(|item| quote(item))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::from("authorization {\n  users = [\n");
    out.push_str(&format!(
        "    {{ user: {}, password: {} }}\n",
        quote(ADMIN_USER),
        password(ADMIN_USER).render()
    ));
    for user in BUS_USERS {
        let Some(permissions) = permissions(shop, user.name) else {
            continue;
        };
        // An empty allow list would allow everything: a user who publishes nothing is denied all.
        let publish = if permissions.publish.is_empty() {
            "deny: [\">\"]".to_owned()
        } else {
            format!("allow: [{}]", list(&permissions.publish))
        };
        out.push_str(&format!(
            "    {{ user: {}, password: {}, permissions: {{ publish: {{ {publish} }}, subscribe: {{ allow: [{}] }} }} }}\n",
            quote(user.name),
            password(user.name).render(),
            list(&permissions.subscribe),
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

/// A double-quoted string of the NATS configuration format (its escapes are JSON's).
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_publishes_only_its_own_events() {
        let order = permissions("s1", "order").expect("order");
        assert!(order.publish.contains(&"s1.order.>".to_owned()));
        assert!(!order.publish.iter().any(|s| s.starts_with("s1.stock")));
        let product = permissions("s1", "product").expect("product");
        assert!(product.publish.contains(&"s1.stock.>".to_owned()));
        assert!(!product.publish.iter().any(|s| s.starts_with("s1.order")));
        let cart = permissions("s1", "cart").expect("cart");
        assert_eq!(
            cart.publish
                .iter()
                .filter(|s| s.starts_with("s1."))
                .collect::<Vec<_>>(),
            ["s1.deadletter.cart"]
        );
        assert_eq!(cart.subscribe, ["_INBOX_cart.>"]);
        assert!(permissions("s1", "payment").is_none());
    }

    #[test]
    fn the_jetstream_api_is_allowed_only_for_the_stream_and_the_own_consumer() {
        let cart = permissions("s1", "cart").expect("cart");
        let api: Vec<&str> = cart
            .publish
            .iter()
            .map(String::as_str)
            .filter(|s| s.starts_with('$'))
            .collect();
        assert_eq!(
            api,
            [
                "$JS.API.STREAM.INFO.S1_EVENTS",
                "$JS.API.STREAM.CREATE.S1_EVENTS",
                "$JS.API.CONSUMER.CREATE.S1_EVENTS.cart",
                "$JS.API.CONSUMER.CREATE.S1_EVENTS.cart.>",
                "$JS.API.CONSUMER.INFO.S1_EVENTS.cart",
                "$JS.API.CONSUMER.MSG.NEXT.S1_EVENTS.cart",
                "$JS.ACK.S1_EVENTS.cart.>",
            ]
        );
        for user in BUS_USERS {
            let permissions = permissions("s1", user.name).expect("user");
            for subject in &permissions.publish {
                assert!(
                    !subject.contains('*') && !subject.starts_with("$JS.API.>"),
                    "{}: {subject} is too wide",
                    user.name
                );
                if let Some(consumer) = subject.strip_prefix("$JS.API.CONSUMER.") {
                    assert!(
                        consumer.contains(&format!("S1_EVENTS.{}", user.name)),
                        "{}: {subject} is another's consumer",
                        user.name
                    );
                }
            }
        }
    }

    #[test]
    fn the_catalog_is_announced_by_the_product_service_and_heard_by_the_gateway() {
        let product = permissions("s1", "product").expect("product");
        assert!(product.publish.contains(&"s1.catalog.>".to_owned()));
        let gateway = permissions("s1", "gateway").expect("gateway");
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
        let config = server_authorization("s1", |_| Password::Literal("p\"w"));
        assert!(
            config.contains(r#"user: "order", password: "p\"w""#),
            "{config}"
        );
        assert!(config.contains(r#"user: "admin""#), "{config}");
        assert!(config.contains(r#""s1.order.>""#), "{config}");
        assert!(config.contains(r#"publish: { deny: [">"] }"#), "{config}");
        let from_env = server_authorization("s1", |user| {
            Password::Environment(if user == "cart" { "CART_PW" } else { "X" })
        });
        assert!(
            from_env.contains(r#"user: "cart", password: $CART_PW,"#),
            "{from_env}"
        );
        assert_eq!(password_variable("cart"), "SOUK_NATS_PASSWORD_CART");
    }
}
