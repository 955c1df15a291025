//! The contract between the operator and the `souk` binary: what the operator writes into a pod
//! spec (subcommands, environment, ports, files, health services) is what `souk` reads. Both sides
//! take the names from here, so a renamed setting changes both or neither; the souk crate's test
//! `contract_tests::every_example_shop_renders_containers_souk_parses` renders every example Shop
//! with the operator and parses each container's arguments and environment with souk's own
//! command-line parser.
//!
//! No dependencies: the operator uses it without pulling in the services.
//!
//! `api` is the other agreement kept here: the bounds the services enforce on client input
//! and the gateway's OpenAPI document states.

pub mod api;
pub mod bus;

/// The six services of a shop, and what each one is: its name, whether it owns a database and
/// an outbox (drained by a relayer), which services it calls and whether it uses NATS. The
/// operator builds its pods from this; `souk` names its services by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Gateway,
    User,
    Product,
    Cart,
    Order,
    Payment,
}

impl Service {
    /// Every service, in the order they are applied and reported.
    pub const ALL: [Service; 6] = [
        Service::Gateway,
        Service::User,
        Service::Product,
        Service::Cart,
        Service::Order,
        Service::Payment,
    ];

    /// The services that own a database, in order.
    pub const WITH_DATABASE: [Service; 5] = [
        Service::User,
        Service::Product,
        Service::Cart,
        Service::Order,
        Service::Payment,
    ];

    /// The name used in object names, args and environment (`user`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::User => "user",
            Self::Product => "product",
            Self::Cart => "cart",
            Self::Order => "order",
            Self::Payment => "payment",
        }
    }

    /// Whether the service owns a Postgres database.
    pub fn has_database(self) -> bool {
        self != Self::Gateway
    }

    /// Whether its pod carries a relayer sidecar draining its outbox.
    pub fn has_relayer(self) -> bool {
        matches!(self, Self::Product | Self::Order)
    }

    /// The services it calls over gRPC (`souk serve <service>` reads their URLs, and no others).
    pub fn calls(self) -> &'static [Service] {
        match self {
            Self::Gateway => &[Self::User, Self::Product, Self::Cart, Self::Order],
            Self::Cart => &[Self::Product],
            Self::Order => &[Self::Cart, Self::Payment],
            Self::User | Self::Product | Self::Payment => &[],
        }
    }

    /// Whether it uses NATS: it consumes or announces events (the gateway hears the catalog's).
    pub fn uses_bus(self) -> bool {
        !matches!(self, Self::User | Self::Payment)
    }

    /// The gRPC services in an order where each one's peers come before it (`souk up` starts
    /// them so).
    pub const IN_START_ORDER: [Service; 5] = [
        Service::User,
        Service::Product,
        Service::Cart,
        Service::Payment,
        Service::Order,
    ];

    /// The service of this name.
    pub fn named(name: &str) -> Option<Service> {
        Self::ALL.into_iter().find(|service| service.name() == name)
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Subcommands of `souk` that containers run: `souk serve <service>`, `souk relay <service>`.
pub mod command {
    /// Runs one service (gRPC, or the gateway's HTTP).
    pub const SERVE: &str = "serve";
    /// Runs the relayer of one service's outbox.
    pub const RELAY: &str = "relay";
}

/// The environment variables `souk` reads (each has a command-line flag too).
pub mod env {
    /// The shop's name (prefixes streams and databases).
    pub const SHOP_NAME: &str = "SOUK_SHOP_NAME";
    /// The log filter.
    pub const LOG: &str = "SOUK_LOG";
    /// `json` or `pretty`.
    pub const LOG_FORMAT: &str = "SOUK_LOG_FORMAT";
    /// Where `/metrics` (and `/healthz`) are served.
    pub const METRICS_ADDR: &str = "SOUK_METRICS_ADDR";
    /// The NATS server.
    pub const NATS_URL: &str = "SOUK_NATS_URL";
    /// The NATS user a process connects as: its service's (see [`crate::bus`]).
    pub const NATS_USER: &str = "SOUK_NATS_USER";
    /// The password of [`NATS_USER`].
    pub const NATS_PASSWORD: &str = "SOUK_NATS_PASSWORD";
    /// Where the gateway listens.
    pub const HTTP_ADDR: &str = "SOUK_HTTP_ADDR";
    /// Where a gRPC service listens.
    pub const GRPC_ADDR: &str = "SOUK_GRPC_ADDR";
    /// The JWT public key (PEM), for every service that checks tokens.
    pub const JWT_PUBLIC_KEY_FILE: &str = "SOUK_JWT_PUBLIC_KEY_FILE";
    /// The JWT private key (PEM), for the services that sign.
    pub const JWT_PRIVATE_KEY_FILE: &str = "SOUK_JWT_PRIVATE_KEY_FILE";
    /// Lifetime of access tokens.
    pub const TOKEN_TTL_SECONDS: &str = "SOUK_TOKEN_TTL_SECONDS";
    /// The administrator the user service makes sure of.
    pub const ADMIN_EMAIL: &str = "SOUK_ADMIN_EMAIL";
    /// Its password.
    pub const ADMIN_PASSWORD: &str = "SOUK_ADMIN_PASSWORD";
    /// The payment simulator declines charges above this many cents.
    pub const PAYMENT_DECLINE_ABOVE_CENTS: &str = "SOUK_PAYMENT_DECLINE_ABOVE_CENTS";

    /// One service's own database.
    pub const USER_DATABASE_URL: &str = "SOUK_USER_DATABASE_URL";
    pub const PRODUCT_DATABASE_URL: &str = "SOUK_PRODUCT_DATABASE_URL";
    pub const CART_DATABASE_URL: &str = "SOUK_CART_DATABASE_URL";
    pub const ORDER_DATABASE_URL: &str = "SOUK_ORDER_DATABASE_URL";
    pub const PAYMENT_DATABASE_URL: &str = "SOUK_PAYMENT_DATABASE_URL";

    /// Where another service answers gRPC.
    pub const USER_URL: &str = "SOUK_USER_URL";
    pub const PRODUCT_URL: &str = "SOUK_PRODUCT_URL";
    pub const CART_URL: &str = "SOUK_CART_URL";
    pub const ORDER_URL: &str = "SOUK_ORDER_URL";
    pub const PAYMENT_URL: &str = "SOUK_PAYMENT_URL";

    /// `SOUK_<SERVICE>_DATABASE_URL` of a service with a database (`user`, ...), if it is one.
    pub fn database_url(service: &str) -> Option<&'static str> {
        Some(match service {
            "user" => USER_DATABASE_URL,
            "product" => PRODUCT_DATABASE_URL,
            "cart" => CART_DATABASE_URL,
            "order" => ORDER_DATABASE_URL,
            "payment" => PAYMENT_DATABASE_URL,
            _ => return None,
        })
    }

    /// `SOUK_<SERVICE>_URL` of a gRPC service (`user`, ...), if it is one.
    pub fn service_url(service: &str) -> Option<&'static str> {
        Some(match service {
            "user" => USER_URL,
            "product" => PRODUCT_URL,
            "cart" => CART_URL,
            "order" => ORDER_URL,
            "payment" => PAYMENT_URL,
            _ => return None,
        })
    }
}

/// Ports of the containers.
pub mod port {
    /// gRPC of every service but the gateway.
    pub const GRPC: u16 = 50051;
    /// HTTP of the gateway.
    pub const HTTP: u16 = 8080;
    /// `/metrics` of a service.
    pub const METRICS: u16 = 9090;
    /// `/metrics` of a relayer sidecar.
    pub const RELAYER_METRICS: u16 = 9091;
}

/// Files of the JWT key pair, as keys of the operator's Secret and names in the mounted folder.
pub mod file {
    /// The PEM public key.
    pub const JWT_PUBLIC_KEY: &str = "public.pem";
    /// The PEM private key (PKCS#8).
    pub const JWT_PRIVATE_KEY: &str = "private.pem";
}

/// Defaults that the operator and `souk` both apply.
pub mod defaults {
    /// Lifetime of access tokens, in seconds: short, since clients renew with their refresh
    /// token, and a role change or a deleted account takes effect within it.
    pub const TOKEN_TTL_SECONDS: u64 = 900;
    /// The payment simulator declines charges above this many cents.
    pub const PAYMENT_DECLINE_ABOVE_CENTS: i64 = 1_000_000;
    /// Memory a service container requests, in MiB (the operator's default; what an idle
    /// service should fit in).
    pub const SERVICE_MEMORY_REQUEST_MIB: u32 = 64;
    /// Memory a service container may use, in MiB (the operator's default limit).
    pub const SERVICE_MEMORY_LIMIT_MIB: u32 = 256;
    /// Memory a relayer sidecar requests, in MiB.
    pub const RELAYER_MEMORY_REQUEST_MIB: u32 = 32;
    /// Memory a relayer sidecar may use, in MiB.
    pub const RELAYER_MEMORY_LIMIT_MIB: u32 = 128;
}

/// gRPC health service that reports the process alive whatever its database does: the liveness
/// probe asks for it, the readiness probe for `""` (which follows the database).
pub const LIVENESS_HEALTH_SERVICE: &str = "liveness";

/// The NATS server version: a managed NATS runs it by default, and `scripts/setup` builds the same
/// version for local runs and tests (pinned in `tools/nats/go.mod`; the operator's tests check
/// that the two agree).
pub const NATS_VERSION: &str = "2.11.17";

#[cfg(test)]
mod tests {
    use super::{Service, env};

    #[test]
    fn services_start_after_the_peers_they_call() {
        for (i, service) in Service::IN_START_ORDER.into_iter().enumerate() {
            for peer in service.calls() {
                let at = Service::IN_START_ORDER
                    .iter()
                    .position(|s| s == peer)
                    .expect("a gRPC service");
                assert!(at < i, "{service} starts before its peer {peer}");
            }
        }
        for service in Service::ALL {
            assert_eq!(Service::named(service.name()), Some(service));
        }
        assert_eq!(Service::named("inventory"), None);
    }

    #[test]
    fn per_service_names_follow_the_pattern() {
        for service in ["user", "product", "cart", "order", "payment"] {
            let upper = service.to_uppercase();
            assert_eq!(
                env::database_url(service),
                Some(format!("SOUK_{upper}_DATABASE_URL").as_str())
            );
            assert_eq!(
                env::service_url(service),
                Some(format!("SOUK_{upper}_URL").as_str())
            );
        }
        assert_eq!(env::database_url("gateway"), None);
    }
}
