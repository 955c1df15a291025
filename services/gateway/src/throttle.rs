//! Throttling of attempts at credentials: logins per account, logins and registrations per
//! client address. Each is a token bucket (governor's GCRA) keyed in memory; an attempt
//! beyond it is a 429 problem with `Retry-After`, counted in
//! `souk_gateway_throttled_requests_total{limit}`.
//!
//! The account key is the email as the user service compares it (NFKC, lower case), so that
//! spelling one address differently buys no extra attempts. The client address is the TCP
//! peer; behind a proxy that is the proxy, so the per-address rate must be set for it.
//! Buckets of quiet keys are forgotten once the maps grow large, so memory stays bounded.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
};
use http::request::Parts;
use unicode_normalization::UnicodeNormalization as _;

use crate::{
    error::ApiError,
    limits::{Limits, Rate},
    metrics::Metrics,
};

/// Keys kept before quiet ones are dropped.
const MAX_KEYS: usize = 100_000;

#[derive(Debug)]
pub(crate) struct Throttle {
    per_account: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    metrics: Metrics,
}

fn quota(rate: Rate) -> Quota {
    Quota::per_minute(rate.per_minute).allow_burst(rate.burst)
}

/// The email as one account: trimmed, NFKC, lower case.
fn account_key(email: &str) -> String {
    email.trim().nfkc().collect::<String>().to_lowercase()
}

impl Throttle {
    pub(crate) fn new(limits: &Limits, metrics: Metrics) -> Self {
        Self {
            per_account: RateLimiter::keyed(quota(limits.login_per_account)),
            per_address: RateLimiter::keyed(quota(limits.auth_per_address)),
            clock: DefaultClock::default(),
            metrics,
        }
    }

    /// A login attempt from `client` for `email`.
    pub(crate) fn login(&self, client: ClientAddr, email: &str) -> Result<(), ApiError> {
        self.address(client)?;
        let key = account_key(email);
        check(&self.per_account, &key, &self.clock).map_err(|retry_after| {
            self.metrics.throttled("login_per_account");
            ApiError::TooManyRequests {
                detail: "too many login attempts for this account, try again later".into(),
                retry_after,
            }
        })
    }

    /// A registration from `client`.
    pub(crate) fn register(&self, client: ClientAddr) -> Result<(), ApiError> {
        self.address(client)
    }

    fn address(&self, client: ClientAddr) -> Result<(), ApiError> {
        check(&self.per_address, &client.0, &self.clock).map_err(|retry_after| {
            self.metrics.throttled("auth_per_address");
            ApiError::TooManyRequests {
                detail: "too many attempts from this address, try again later".into(),
                retry_after,
            }
        })
    }
}

/// Takes a token from `key`'s bucket, or answers how many seconds until one is there.
fn check<K>(limiter: &DefaultKeyedRateLimiter<K>, key: &K, clock: &DefaultClock) -> Result<(), u64>
where
    K: Clone + Eq + std::hash::Hash,
{
    if limiter.len() > MAX_KEYS {
        limiter.retain_recent();
    }
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(clock.now());
        wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
    })
}

/// The client's address: the TCP peer the server recorded for the connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn throttle(per_account: u32, per_address: u32) -> Throttle {
        let rate = |n| {
            let n = NonZeroU32::new(n).expect("nonzero");
            Rate::new(n, n)
        };
        let limits = Limits {
            login_per_account: rate(per_account),
            auth_per_address: rate(per_address),
            ..Limits::default()
        };
        let mut registry = prometheus_client::registry::Registry::default();
        Throttle::new(&limits, Metrics::register(&mut registry))
    }

    fn client(last: u8) -> ClientAddr {
        ClientAddr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
    }

    #[test]
    fn an_account_gets_its_burst_then_waits_whatever_its_spelling() {
        let throttle = throttle(3, 100);
        for n in 0..3 {
            assert!(throttle.login(client(n), "ada@example.com").is_ok(), "{n}");
        }
        for spelling in [
            "ADA@example.com",
            " ada@example.com",
            "\u{ff41}da@example.com",
        ] {
            let Err(ApiError::TooManyRequests { retry_after, .. }) =
                throttle.login(client(9), spelling)
            else {
                panic!("{spelling:?} not throttled");
            };
            assert!((1..=60).contains(&retry_after), "{retry_after}");
        }
        assert!(throttle.login(client(9), "bob@example.com").is_ok());
    }

    #[test]
    fn an_address_gets_its_burst_across_accounts_and_registrations() {
        let throttle = throttle(100, 2);
        assert!(throttle.register(client(1)).is_ok());
        assert!(throttle.login(client(1), "a@example.com").is_ok());
        assert!(matches!(
            throttle.login(client(1), "b@example.com"),
            Err(ApiError::TooManyRequests { .. })
        ));
        assert!(throttle.register(client(1)).is_err());
        assert!(throttle.register(client(2)).is_ok());
    }
}
