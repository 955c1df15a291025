//! The shop's connection to NATS JetStream. Connecting never fails for a server that is down:
//! the client connects (and later reconnects) in the background, and every user of the bus
//! retries with backoff, so a service starts and recovers without NATS being there first.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::{
    config::{Secret, ShopName},
    events,
};

/// A user and password for the shop's NATS (the users and their permissions:
/// `souk_contract::bus`).
#[derive(Debug, Clone)]
pub struct NatsCredentials {
    pub user: String,
    pub password: Secret<String>,
}

/// How long JetStream remembers message ids to drop duplicates (docs/architecture.md: 2 minutes).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    shop: ShopName,
}

impl Bus {
    /// A bus for `shop` on the NATS server at `url` (connected in the background).
    pub async fn connect(url: &str, shop: ShopName, name: &str) -> anyhow::Result<Self> {
        Self::connect_as(url, None, shop, name).await
    }

    /// As `connect`, authenticated as `credentials`' user when given (`souk_contract::bus`): its
    /// inbox is then the user's own, the only one it may subscribe to.
    pub async fn connect_as(
        url: &str,
        credentials: Option<&NatsCredentials>,
        shop: ShopName,
        name: &str,
    ) -> anyhow::Result<Self> {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(credentials) = credentials {
            options = async_nats::ConnectOptions::with_user_and_password(
                credentials.user.clone(),
                credentials.password.expose().clone(),
            )
            .custom_inbox_prefix(souk_contract::bus::inbox_prefix(&credentials.user));
        }
        let client = options
            .name(format!("souk-{shop}-{name}"))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempts| {
                backoff(u32::try_from(attempts).unwrap_or(u32::MAX))
            })
            .connect(url)
            .await
            .map_err(|err| anyhow::anyhow!("SOUK_NATS_URL: cannot use {url:?}: {err}"))?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .build(client.clone());
        Ok(Self {
            client,
            jetstream,
            shop,
        })
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn shop(&self) -> &ShopName {
        &self.shop
    }

    /// Creates the shop's stream when missing: every subject of the shop, kept on file, with the
    /// duplicate window that makes re-published outbox rows harmless.
    pub async fn ensure_stream(&self) -> anyhow::Result<stream::Stream> {
        let config = stream::Config {
            name: events::stream_name(&self.shop),
            subjects: vec![format!("{}.>", self.shop)],
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: Duration::from_secs(7 * 24 * 3600),
            ..Default::default()
        };
        self.jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|err| {
                anyhow::anyhow!(
                    "cannot create stream {}: {err}",
                    events::stream_name(&self.shop)
                )
            })
    }
}

/// Exponential backoff from 50 ms, capped at 2 s: quick to recover in a test, gentle in an outage.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1u64 << attempt.min(6))).min(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        assert_eq!(backoff(0), Duration::from_millis(50));
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(6), Duration::from_secs(2));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(2));
    }
}
