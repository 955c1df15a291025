//! Typed configuration shared by every service: values that parse themselves (a shop name is
//! valid by construction) and a `Secret` wrapper that never prints what it holds.
//!
//! Each setting is a flag with an environment fallback of the same name (`--shop-name` and
//! `SOUK_SHOP_NAME`); the argument groups here are flattened into the binary's commands. Bad
//! configuration stops the process at start with one line naming the setting.

use std::{fmt, str::FromStr, time::Duration};

/// A value that must not reach logs: `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The wrapped value; call sites that reveal it are easy to grep for.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl FromStr for Secret<String> {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// The name of one shop: it prefixes databases (`<shop>_<service>`), the JetStream stream
/// (`<SHOP>_EVENTS`) and subjects (`<shop>.order.created`), so two shops can share one Postgres
/// and one NATS. Lower-case letters, digits, `_` and `-`, starting with a letter, at most 40.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShopName(String);

impl ShopName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The database of one service of this shop on a shared server.
    pub fn database_name(&self, service: &str) -> String {
        format!("{}_{service}", self.0)
    }
}

impl Default for ShopName {
    fn default() -> Self {
        Self("souk".into())
    }
}

impl fmt::Display for ShopName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ShopName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = (1..=40).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a shop name: 1 to 40 lower-case letters, digits, '_' or '-', starting with a letter"
            ))
        }
    }
}

/// A duration given as whole seconds (`SOUK_TOKEN_TTL_SECONDS=3600`), at least one.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(0) | Err(_) => Err(format!("{s:?} is not a positive whole number of seconds")),
        Ok(n) => Ok(Duration::from_secs(n)),
    }
}

/// A duration: whole seconds (`30`), or a number with a unit (`500ms`, `30s`, `2m`); positive.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("{s:?} is not a duration (e.g. 30, 30s, 500ms, 2m)");
    let text = s.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| invalid())?;
    let duration = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(invalid)?),
        _ => return Err(invalid()),
    };
    if duration.is_zero() {
        return Err(format!("{s:?}: must be more than zero"));
    }
    Ok(duration)
}

/// Checks a PostgreSQL URL; the error names the setting and never repeats the URL (it may
/// hold a password).
pub fn check_database_url(setting: &str, url: &Secret<String>) -> anyhow::Result<()> {
    let url = url.expose();
    let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    match url.parse::<sqlx::postgres::PgConnectOptions>() {
        Ok(_) if postgres => Ok(()),
        _ => anyhow::bail!(
            "{setting}: not a PostgreSQL URL (postgres://user[:password]@host[:port]/database)"
        ),
    }
}

/// A NATS server URL (`nats://host:port`), checked at start.
pub fn parse_nats_url(s: &str) -> Result<String, String> {
    s.parse::<async_nats::ServerAddr>()
        .map(|_| s.to_owned())
        .map_err(|err| format!("{s:?} is not a NATS URL (nats://host:port): {err}"))
}

/// Settings every process has.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Prefix of this shop's databases, stream and subjects.
    #[arg(long, env = souk_contract::env::SHOP_NAME, default_value = "souk", global = true)]
    pub shop_name: ShopName,

    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long = "log", env = souk_contract::env::LOG, default_value = "info", global = true)]
    pub log: String,

    /// Log format.
    #[arg(
        long,
        env = souk_contract::env::LOG_FORMAT,
        value_enum,
        default_value = "pretty",
        global = true
    )]
    pub log_format: crate::telemetry::LogFormat,
}

/// Where the databases live.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// The PostgreSQL server on which `<shop>_<service>` databases are created when missing.
    /// A service's own `SOUK_<SERVICE>_DATABASE_URL` takes precedence.
    #[arg(
        long,
        env = "SOUK_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub database_url: Secret<String>,
}

impl DatabaseArgs {
    /// Checks the URL once at start (clap would echo a rejected value, password included).
    pub fn check(&self) -> anyhow::Result<()> {
        check_database_url("SOUK_DATABASE_URL", &self.database_url)
    }
}

/// The shop's NATS server, with JetStream.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    #[arg(long, env = souk_contract::env::NATS_URL, default_value = "nats://127.0.0.1:4222", value_parser = parse_nats_url)]
    pub nats_url: String,

    /// Attempts at handling a failing event before it goes to the dead-letter subject.
    #[arg(long, env = "SOUK_MAX_DELIVER", default_value_t = crate::consumer::DEFAULT_MAX_DELIVER, value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub max_deliver: i64,

    /// The NATS user this process connects as (its service's, see `souk_contract::bus`); unset: none.
    #[arg(long, env = souk_contract::env::NATS_USER)]
    pub nats_user: Option<String>,

    /// The password of `SOUK_NATS_USER`.
    #[arg(long, env = souk_contract::env::NATS_PASSWORD, hide_env_values = true)]
    pub nats_password: Option<Secret<String>>,
}

impl NatsArgs {
    /// The credentials to connect with: both settings, or neither.
    pub fn credentials(&self) -> anyhow::Result<Option<crate::bus::NatsCredentials>> {
        match (&self.nats_user, &self.nats_password) {
            (Some(user), Some(password)) if !user.is_empty() => {
                Ok(Some(crate::bus::NatsCredentials {
                    user: user.clone(),
                    password: password.clone(),
                }))
            }
            (None, None) => Ok(None),
            _ => anyhow::bail!("SOUK_NATS_USER and SOUK_NATS_PASSWORD: give both, or neither"),
        }
    }
}

/// The public key that access tokens are verified with: every service and the gateway read it.
#[derive(Debug, Clone, clap::Args)]
pub struct PublicKeyArgs {
    /// ES256 public key, SPKI PEM (every service verifies with it).
    #[arg(long, env = souk_contract::env::JWT_PUBLIC_KEY_FILE)]
    pub jwt_public_key_file: Option<std::path::PathBuf>,
}

/// The private key and the lifetime of the access tokens signed with it: the user service signs
/// customers' tokens, the order service its own service token.
#[derive(Debug, Clone, clap::Args)]
pub struct SigningArgs {
    /// ES256 private key, PKCS#8 PEM (with SOUK_JWT_PUBLIC_KEY_FILE).
    #[arg(long, env = souk_contract::env::JWT_PRIVATE_KEY_FILE)]
    pub jwt_private_key_file: Option<std::path::PathBuf>,

    /// Lifetime of access tokens, in seconds: a role change or a deleted account takes effect
    /// within it (clients renew with their refresh token).
    #[arg(long, env = souk_contract::env::TOKEN_TTL_SECONDS, default_value = "900", value_parser = parse_seconds)]
    pub token_ttl_seconds: Duration,
}

/// The lifetime of refresh tokens (the user service's).
#[derive(Debug, Clone, clap::Args)]
pub struct RefreshArgs {
    /// Lifetime of refresh tokens, in seconds (30 days).
    #[arg(long, env = "SOUK_REFRESH_TOKEN_TTL_SECONDS", default_value = "2592000", value_parser = parse_seconds)]
    pub refresh_token_ttl_seconds: Duration,
}

/// The JWT key pair (PEM files) and token lifetimes. Without the keys `souk up` generates a
/// development pair.
#[derive(Debug, Clone, clap::Args)]
pub struct JwtArgs {
    #[command(flatten)]
    pub public: PublicKeyArgs,
    #[command(flatten)]
    pub signing: SigningArgs,
    #[command(flatten)]
    pub refresh: RefreshArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn shop_names_are_checked() {
        for good in ["souk", "t1", "demo-shop", "a_b"] {
            assert!(good.parse::<ShopName>().is_ok(), "{good}");
        }
        for bad in ["", "1shop", "Shop", "a.b", "a b", "a*", &"x".repeat(41)] {
            assert!(bad.parse::<ShopName>().is_err(), "{bad}");
        }
        let shop: ShopName = "t1".parse().expect("valid");
        assert_eq!(shop.database_name("user"), "t1_user");
    }

    #[test]
    fn urls_are_checked_without_echoing_secrets() {
        let url = |s: &str| Secret::new(s.to_owned());
        assert!(
            check_database_url("X", &url("postgres://postgres@127.0.0.1:5432/postgres")).is_ok()
        );
        let err = check_database_url("SOUK_X", &url("mysql://root:hunter2@db/x"))
            .expect_err("not postgres");
        assert!(
            err.to_string().starts_with("SOUK_X:") && !err.to_string().contains("hunter2"),
            "{err}"
        );
        assert!(parse_nats_url("nats://127.0.0.1:4222").is_ok());
        assert!(parse_nats_url("http://[::1").is_err());
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "0", "0s", "-1", "1.5s", "5h", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seconds_must_be_positive_whole_numbers() {
        assert_eq!(parse_seconds("60"), Ok(Duration::from_secs(60)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("1.5").is_err());
    }
}
