//! Throttling of attempts at credentials: failed logins per account, logins and registrations
//! per client address. Each is a token bucket (governor's GCRA) keyed in memory; an attempt
//! beyond it is a 429 problem with `Retry-After`, counted in
//! `souk_gateway_throttled_requests_total{limit}`.
//!
//! Only failed logins take from an account's bucket, so that an account in use (an admin
//! signing in from many places) is never locked out by its own successes. The failure that
//! finds the bucket empty blocks the account until the bucket has a token again; a blocked
//! account's attempts are refused before its password is checked, the right one included.
//!
//! The account key is the email as the user service compares it (NFKC, lower case), so that
//! spelling one address differently buys no extra attempts. The client address is the TCP
//! peer; behind a proxy that is the proxy, so the per-address rate must be set for it.
//! Buckets of quiet keys are forgotten once the maps grow large, so memory stays bounded.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

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
    /// Accounts whose failures emptied their bucket, and until when. A std mutex: it is held
    /// for a map lookup only, never across an await.
    blocked: Mutex<HashMap<String, Instant>>,
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
            blocked: Mutex::new(HashMap::new()),
            per_address: RateLimiter::keyed(quota(limits.auth_per_address)),
            clock: DefaultClock::default(),
            metrics,
        }
    }

    /// Before a login from `client` for `email`: refused when the address is over its rate or
    /// the account is blocked.
    pub(crate) fn login(&self, client: ClientAddr, email: &str) -> Result<(), ApiError> {
        self.address(client)?;
        let key = account_key(email);
        let now = Instant::now();
        let mut blocked = self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match blocked.get(&key) {
            Some(until) if *until > now => {
                let wait = *until - now;
                drop(blocked);
                Err(self.account_throttled(wait))
            }
            Some(_) => {
                blocked.remove(&key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// After a login for `email` failed on its credentials: takes a token from the account's
    /// bucket; when there was none, the account is blocked and this failure is a 429 too.
    pub(crate) fn login_failed(&self, email: &str) -> Result<(), ApiError> {
        let key = account_key(email);
        let Err(wait) = check(&self.per_account, &key, &self.clock) else {
            return Ok(());
        };
        let mut blocked = self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if blocked.len() > MAX_KEYS {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
        }
        blocked.insert(key, Instant::now() + wait);
        drop(blocked);
        Err(self.account_throttled(wait))
    }

    fn account_throttled(&self, wait: Duration) -> ApiError {
        self.metrics.throttled("login_per_account");
        ApiError::TooManyRequests {
            detail: "too many failed logins for this account, try again later".into(),
            retry_after: seconds(wait),
        }
    }

    /// A registration from `client`.
    pub(crate) fn register(&self, client: ClientAddr) -> Result<(), ApiError> {
        self.address(client)
    }

    fn address(&self, client: ClientAddr) -> Result<(), ApiError> {
        check(&self.per_address, &client.0, &self.clock).map_err(|wait| {
            self.metrics.throttled("auth_per_address");
            ApiError::TooManyRequests {
                detail: "too many attempts from this address, try again later".into(),
                retry_after: seconds(wait),
            }
        })
    }
}

/// Takes a token from `key`'s bucket, or answers how long until one is there.
fn check<K>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
    clock: &DefaultClock,
) -> Result<(), Duration>
where
    K: Clone + Eq + std::hash::Hash,
{
    if limiter.len() > MAX_KEYS {
        limiter.retain_recent();
    }
    limiter
        .check_key(key)
        .map_err(|not_until| not_until.wait_time_from(clock.now()))
}

/// A wait as `Retry-After` seconds: rounded up, at least one.
fn seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
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
    fn an_account_gets_its_burst_of_failures_then_waits_whatever_its_spelling() {
        let throttle = throttle(3, 100);
        // Successes take nothing.
        for n in 0..20 {
            assert!(throttle.login(client(n), "ada@example.com").is_ok(), "{n}");
        }
        for n in 0..3 {
            assert!(throttle.login_failed("ada@example.com").is_ok(), "{n}");
        }
        let Err(ApiError::TooManyRequests { retry_after, .. }) =
            throttle.login_failed("Ada@example.com")
        else {
            panic!("the fourth failure is not throttled");
        };
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        for spelling in [
            "ADA@example.com",
            " ada@example.com",
            "\u{ff41}da@example.com",
        ] {
            assert!(
                matches!(
                    throttle.login(client(9), spelling),
                    Err(ApiError::TooManyRequests { .. })
                ),
                "{spelling:?} not throttled"
            );
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
