//! The gateway's abuse limits, in one place with their defaults (README, "Limits").

use std::{num::NonZeroU32, time::Duration};

use http::HeaderValue;

/// A token bucket: `burst` attempts at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    pub const fn new(per_minute: NonZeroU32, burst: NonZeroU32) -> Self {
        Self { per_minute, burst }
    }
}

/// Limits on connections, requests and attempts at credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A request's head (start line and headers) must arrive within this; a keep-alive
    /// connection waiting for its next request is closed after it too (`SOUK_HTTP_HEADER_TIMEOUT`).
    pub header_timeout: Duration,
    /// A request's body must arrive whole within this, or 408 (`SOUK_HTTP_BODY_TIMEOUT`).
    pub body_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog (`SOUK_HTTP_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Bytes of start line and headers; over it, 431 (`SOUK_HTTP_MAX_HEADER_BYTES`).
    pub max_header_bytes: usize,
    /// Failed logins per account (`SOUK_LOGIN_RATE_PER_ACCOUNT`, per minute; burst as many).
    pub login_per_account: Rate,
    /// Logins and registrations per client address (`SOUK_AUTH_RATE_PER_ADDRESS`).
    pub auth_per_address: Rate,
    /// Origins allowed to call the API from a browser; empty: CORS off
    /// (`SOUK_CORS_ALLOWED_ORIGINS`, comma-separated).
    pub cors_allowed_origins: Vec<HeaderValue>,
}

const fn nonzero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => panic!("zero"),
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_header_bytes: 16 * 1024,
            login_per_account: Rate::new(nonzero(10), nonzero(10)),
            auth_per_address: Rate::new(nonzero(300), nonzero(300)),
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// Parses a rate setting: `N` (N per minute, burst N) or `N/B` (N per minute, burst B).
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let invalid = || format!("{s:?} is not a rate (N per minute, or N/BURST), both above zero");
    let (rate, burst) = s.split_once('/').unwrap_or((s, s));
    let number = |text: &str| text.trim().parse::<NonZeroU32>().map_err(|_| invalid());
    Ok(Rate::new(number(rate)?, number(burst)?))
}

/// Parses a comma-separated list of origins (`https://shop.example.com`); empty means none.
pub fn parse_origins(s: &str) -> Result<Vec<HeaderValue>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/')
                && origin.parse::<http::Uri>().is_ok();
            if valid {
                HeaderValue::from_str(origin).map_err(|_| format!("{origin:?} is not an origin"))
            } else {
                Err(format!(
                    "{origin:?} is not an origin (scheme://host[:port], no path)"
                ))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_take_an_optional_burst() {
        assert_eq!(parse_rate("10"), Ok(Rate::new(nonzero(10), nonzero(10))));
        assert_eq!(parse_rate("60/5"), Ok(Rate::new(nonzero(60), nonzero(5))));
        for bad in ["", "0", "1/0", "x", "-1", "1/2/3"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_are_checked() {
        assert_eq!(parse_origins(""), Ok(Vec::new()));
        assert_eq!(
            parse_origins("https://a.example, http://localhost:3000")
                .expect("valid")
                .len(),
            2
        );
        for bad in ["*", "a.example", "https://a.example/", "ftp://x"] {
            assert!(parse_origins(bad).is_err(), "{bad}");
        }
    }
}
