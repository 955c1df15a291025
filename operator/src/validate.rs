//! What the schema cannot say, or what may have slipped past it: checks of a `Shop` that decide,
//! before anything is applied, whether the operator can act on it. Each error reads as an
//! instruction to the person who wrote the spec.

use crate::shop::{Component, Database, ExternalNats, Nats, Shop};
use kube::ResourceExt;

/// A spec the operator refuses to act on. The message is shown in the `Degraded` condition and in
/// a Warning Event, so it names the field and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "the shop name {name:?} is not usable: it must be at most {max} characters of lower-case letters, digits and '-', starting with a letter and ending with a letter or digit (it prefixes every object name)"
    )]
    InvalidName { name: String, max: usize },

    #[error("spec.services.{service}.replicas is {replicas}; set it to 0 or more")]
    NegativeReplicas { service: Component, replicas: i32 },

    #[error("spec.{field}.{key} names no Souk service; use one of {known} (or remove it)")]
    UnknownService {
        field: &'static str,
        key: String,
        known: String,
    },

    #[error("spec.databases.{service} sets both managed and external; keep one of them")]
    AmbiguousDatabase { service: Component },

    #[error(
        "spec.databases.{service}.external.{field} is empty; name the Secret holding the database URL and its key"
    )]
    EmptyExternalDatabase {
        service: Component,
        field: &'static str,
    },

    #[error("spec.nats sets both managed and external; keep one of them")]
    AmbiguousNats,

    #[error(
        "spec.nats.external.url {url:?} is not a NATS URL; use nats://host:4222 or tls://host:4222"
    )]
    InvalidNatsUrl { url: String },

    #[error("spec.tokenTtlSeconds is {0}; set it to 60 or more")]
    TokenTtlTooShort(i64),

    #[error("spec.paymentDeclineAboveCents is {0}; set it to 0 or more")]
    NegativeDeclineLimit(i64),

    #[error("spec.gateway.ingress.host is empty; set the host name the Ingress answers for")]
    EmptyIngressHost,

    #[error(
        "spec.adminSecretName is empty; name a Secret with keys `email` and `password`, or remove the field"
    )]
    EmptyAdminSecretName,

    #[error(
        "spec.nats.external.credentialsSecretName is empty; name a Secret with keys `user` and `password`, or remove the field"
    )]
    EmptyNatsCredentialsSecretName,

    #[error(
        "Secret {name} ({field}) was not found in namespace {namespace}; create it with {keys}{hint}"
    )]
    MissingSecret {
        name: String,
        namespace: String,
        field: String,
        /// The keys it needs, ready to read: `key "url"`, `keys "email" and "password"`.
        keys: String,
        hint: &'static str,
    },

    #[error("Secret {name} ({field}) has no key {key:?}; add it{hint}")]
    MissingSecretKey {
        name: String,
        field: String,
        key: String,
        hint: &'static str,
    },
}

impl SpecError {
    /// The condition reason for this error (`CamelCase`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingSecret { .. } => "SecretNotFound",
            Self::MissingSecretKey { .. } => "SecretKeyMissing",
            _ => "InvalidSpec",
        }
    }
}

/// Longest shop name: `<shop>-payment-db-0` and friends must stay within Kubernetes' 63.
pub const MAX_SHOP_NAME: usize = 40;

/// A Secret that must exist, with a key, before the shop can be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredSecret {
    pub name: String,
    pub keys: Vec<String>,
    /// The spec field that names it, for messages.
    pub field: String,
    /// What the key should hold, for messages.
    pub hint: &'static str,
}

/// Checks everything that needs no API call. The first problem found is returned.
pub fn validate(shop: &Shop) -> Result<(), SpecError> {
    let name = shop.name_any();
    if !is_dns_label(&name, MAX_SHOP_NAME) {
        return Err(SpecError::InvalidName {
            name,
            max: MAX_SHOP_NAME,
        });
    }
    let spec = &shop.spec;

    if let Some(key) = spec.services.unknown.keys().next() {
        return Err(SpecError::UnknownService {
            field: "services",
            key: key.clone(),
            known: names(&Component::ALL),
        });
    }
    if let Some(key) = spec.databases.unknown.keys().next() {
        return Err(SpecError::UnknownService {
            field: "databases",
            key: key.clone(),
            known: names(&Component::WITH_DATABASE),
        });
    }
    for service in Component::ALL {
        if let Some(replicas) = spec.services.get(service).and_then(|s| s.replicas)
            && replicas < 0
        {
            return Err(SpecError::NegativeReplicas { service, replicas });
        }
    }
    for service in Component::WITH_DATABASE {
        if let Some(db) = spec.databases.get(service)
            && db.managed.is_some()
            && db.external.is_some()
        {
            return Err(SpecError::AmbiguousDatabase { service });
        }
        if let Database::External(external) = spec.databases.resolve(service) {
            for (field, value) in [
                ("secretName", &external.secret_name),
                ("key", &external.key),
            ] {
                if value.trim().is_empty() {
                    return Err(SpecError::EmptyExternalDatabase { service, field });
                }
            }
        }
    }
    if spec.nats.managed.is_some() && spec.nats.external.is_some() {
        return Err(SpecError::AmbiguousNats);
    }
    if let Nats::External(external) = spec.nats.resolve() {
        let url = external.url.trim();
        let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .any(|scheme| url.starts_with(scheme) && url.len() > scheme.len());
        if !scheme_ok {
            return Err(SpecError::InvalidNatsUrl {
                url: external.url.clone(),
            });
        }
        if external
            .credentials_secret_name
            .as_ref()
            .is_some_and(|name| name.trim().is_empty())
        {
            return Err(SpecError::EmptyNatsCredentialsSecretName);
        }
    }
    if spec.token_ttl_seconds < 60 {
        return Err(SpecError::TokenTtlTooShort(spec.token_ttl_seconds));
    }
    if spec.payment_decline_above_cents < 0 {
        return Err(SpecError::NegativeDeclineLimit(
            spec.payment_decline_above_cents,
        ));
    }
    if let Some(ingress) = &spec.gateway.ingress
        && ingress.host.trim().is_empty()
    {
        return Err(SpecError::EmptyIngressHost);
    }
    if let Some(admin) = &spec.admin_secret_name
        && admin.trim().is_empty()
    {
        return Err(SpecError::EmptyAdminSecretName);
    }
    Ok(())
}

/// The Secrets the user provides and the shop needs: external database URLs, the external
/// NATS's credentials and the admin account. The controller checks they exist before applying anything.
pub fn required_secrets(shop: &Shop) -> Vec<RequiredSecret> {
    let spec = &shop.spec;
    let mut required = Vec::new();
    for service in Component::WITH_DATABASE {
        if let Database::External(external) = spec.databases.resolve(service) {
            required.push(RequiredSecret {
                name: external.secret_name.clone(),
                keys: vec![external.key.clone()],
                field: format!("spec.databases.{service}.external.secretName"),
                hint: " holding the database URL (postgres://user:password@host:5432/db)",
            });
        }
    }
    if let Nats::External(ExternalNats {
        credentials_secret_name: Some(credentials),
        ..
    }) = spec.nats.resolve()
    {
        required.push(RequiredSecret {
            name: credentials.clone(),
            keys: vec!["user".to_owned(), "password".to_owned()],
            field: "spec.nats.external.credentialsSecretName".to_owned(),
            hint: " (the NATS user every service connects as)",
        });
    }
    if let Some(admin) = &spec.admin_secret_name {
        required.push(RequiredSecret {
            name: admin.clone(),
            keys: vec!["email".to_owned(), "password".to_owned()],
            field: "spec.adminSecretName".to_owned(),
            hint: " (the administrator's e-mail and password)",
        });
    }
    required
}

/// `key "url"` or `keys "email" and "password"`.
pub fn describe_keys(keys: &[String]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    match quoted.as_slice() {
        [one] => format!("key {one}"),
        [init @ .., last] => format!("keys {} and {last}", init.join(", ")),
        [] => "its keys".to_owned(),
    }
}

fn names(components: &[Component]) -> String {
    components
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An RFC 1035 label of at most `max` characters.
fn is_dns_label(name: &str, max: usize) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.last().is_some_and(|b| *b != b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shop::{DatabaseSpec, ExternalDatabase, ManagedDatabase};

    #[test]
    fn the_default_shop_is_valid() {
        assert_eq!(validate(&Shop::test()), Ok(()));
    }

    #[test]
    fn a_negative_replica_count_is_refused_with_the_field_named() {
        let err = validate(&Shop::test().with_replicas(Component::Cart, -1)).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "spec.services.cart.replicas is -1; set it to 0 or more"
        );
        assert_eq!(err.reason(), "InvalidSpec");
    }

    #[test]
    fn an_unknown_service_is_refused_with_the_known_ones_listed() {
        let mut shop = Shop::test();
        shop.spec
            .services
            .unknown
            .insert("shipping".into(), serde_json::json!({"replicas": 1}));
        let err = validate(&shop).expect_err("refused").to_string();
        assert!(err.contains("spec.services.shipping"), "{err}");
        assert!(
            err.contains("gateway, user, product, cart, order, payment"),
            "{err}"
        );

        let mut shop = Shop::test();
        shop.spec
            .databases
            .unknown
            .insert("gateway".into(), serde_json::json!({}));
        let err = validate(&shop).expect_err("refused").to_string();
        assert!(err.contains("spec.databases.gateway"), "{err}");
    }

    #[test]
    fn a_database_both_managed_and_external_is_refused() {
        let mut shop = Shop::test();
        shop.spec.databases.order = Some(DatabaseSpec {
            managed: Some(ManagedDatabase::default()),
            external: Some(ExternalDatabase {
                secret_name: "orders".into(),
                key: "url".into(),
            }),
        });
        assert_eq!(
            validate(&shop),
            Err(SpecError::AmbiguousDatabase {
                service: Component::Order
            })
        );
    }

    #[test]
    fn names_that_cannot_prefix_objects_are_refused() {
        for bad in ["Demo", "1shop", "a_b", "shop-", &"x".repeat(41)] {
            let shop = Shop::test().with_name(bad);
            assert!(
                matches!(validate(&shop), Err(SpecError::InvalidName { .. })),
                "{bad}"
            );
        }
        assert_eq!(validate(&Shop::test().with_name(&"x".repeat(40))), Ok(()));
    }

    #[test]
    fn external_nats_needs_a_nats_url() {
        let shop = Shop::test().with_external_nats("http://nats:4222");
        assert!(matches!(
            validate(&shop),
            Err(SpecError::InvalidNatsUrl { .. })
        ));
        assert_eq!(
            validate(&Shop::test().with_external_nats("nats://nats.infra:4222")),
            Ok(())
        );
    }

    #[test]
    fn an_empty_nats_credentials_secret_name_is_refused_naming_the_field() {
        let shop = Shop::test().with_external_nats_credentials("nats://nats.infra:4222", " ");
        let error = validate(&shop).expect_err("an empty name");
        assert!(
            error
                .to_string()
                .starts_with("spec.nats.external.credentialsSecretName is empty"),
            "{error}"
        );
    }

    #[test]
    fn required_secrets_are_the_external_databases_and_the_admin() {
        let shop = Shop::test()
            .with_external_database(Component::Order, "orders-db")
            .with_external_nats_credentials("nats://nats.infra:4222", "bus-user")
            .with_admin_secret("demo-admin");
        let required = required_secrets(&shop);
        let names: Vec<_> = required.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["orders-db", "bus-user", "demo-admin"]);
        assert_eq!(required[0].keys, ["url"]);
        assert_eq!(required[1].keys, ["user", "password"]);
        assert_eq!(required[2].keys, ["email", "password"]);
        assert_eq!(
            describe_keys(&required[2].keys),
            r#"keys "email" and "password""#
        );
        assert_eq!(describe_keys(&required[0].keys), r#"key "url""#);
    }
}
