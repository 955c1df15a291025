//! Access tokens: ES256 JWTs. The user service signs them with the private key; every other
//! service verifies them with the public key. Verification accepts only ES256 and requires
//! `exp`, `iss` (`souk`) and `aud` (`souk-api`).

use std::{
    collections::HashMap,
    fmt,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Secret;

pub const ISSUER: &str = "souk";
pub const AUDIENCE: &str = "souk-api";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
    /// Another Souk service acting on its own (the order service charging a payment); such
    /// tokens are short-lived and never handed to clients.
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
            Self::Service => "service",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "customer" => Ok(Self::Customer),
            "admin" => Ok(Self::Admin),
            "service" => Ok(Self::Service),
            other => Err(format!("unknown role {other:?}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

/// An ES256 key pair as PEM text: PKCS#8 private key, SPKI public key.
#[derive(Clone)]
pub struct KeyPair {
    pub private_pem: Secret<String>,
    pub public_pem: String,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair").finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh P-256 key pair, for development and for the operator's key Secret.
    pub fn generate() -> anyhow::Result<Self> {
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let private_pem = secret.to_pkcs8_pem(LineEnding::LF)?.to_string();
        let public_pem = secret.public_key().to_public_key_pem(LineEnding::LF)?;
        Ok(Self {
            private_pem: Secret::new(private_pem),
            public_pem,
        })
    }
}

/// Reads a PEM file, naming the setting when it cannot.
pub fn read_pem(setting: &str, path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|err| anyhow::anyhow!("{setting}: cannot read {}: {err}", path.display()))
}

/// Signs access tokens (user service).
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
    ttl: Duration,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn from_pem(private_pem: &str, ttl: Duration) -> anyhow::Result<Self> {
        let key = EncodingKey::from_ec_pem(private_pem.as_bytes()).map_err(|err| {
            anyhow::anyhow!("SOUK_JWT_PRIVATE_KEY_FILE: not an ES256 PKCS#8 PEM key: {err}")
        })?;
        Ok(Self { key, ttl })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `user` with `role`, valid for the configured lifetime from now.
    pub fn sign(&self, user: Uuid, role: Role) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = Claims {
            sub: user,
            role,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            exp: now.saturating_add(ttl),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &self.key,
        )?)
    }
}

/// The token of role `service` a service presents on the calls it makes on its own behalf,
/// signed again once half its lifetime has passed. A token per call cost a signature here and a
/// signature check at the callee (which remembers a token it accepted).
#[derive(Debug)]
pub struct ServiceToken {
    signer: Signer,
    /// The token, and when to sign the next.
    current: Mutex<Option<(String, Instant)>>,
}

impl ServiceToken {
    pub fn new(signer: Signer) -> Self {
        Self {
            signer,
            current: Mutex::new(None),
        }
    }

    /// The token to present now.
    pub fn get(&self) -> anyhow::Result<String> {
        self.get_at(Instant::now())
    }

    fn get_at(&self, now: Instant) -> anyhow::Result<String> {
        let mut current = self.lock();
        if let Some((token, renew_at)) = current.as_ref()
            && now < *renew_at
        {
            return Ok(token.clone());
        }
        let token = self.signer.sign(Uuid::nil(), Role::Service)?;
        *current = Some((token.clone(), now + self.signer.ttl() / 2));
        Ok(token)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(String, Instant)>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why a token was refused. The message is safe to show to the client.
#[derive(Debug, thiserror::Error)]
#[error("invalid access token: {0}")]
pub struct InvalidToken(String);

/// Seconds of clock skew allowed past a token's `exp`.
const LEEWAY: i64 = 5;

/// Verifies access tokens (gateway and services).
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    accepted: Arc<Accepted>,
}

/// The tokens a verifier has accepted, with their claims. A client presents its token on every
/// request of its session, and the gateway and each service that a request reaches verify it: a
/// checkout's requests verified it about a dozen times, each an ES256 signature check of some
/// 0.2 ms of CPU. The same bytes verify the same way again, so a token found here is checked
/// for expiry only. Bounded: when full, the expired tokens go, or all of them if none had.
#[derive(Default)]
struct Accepted(Mutex<HashMap<Box<str>, Claims>>);

impl Accepted {
    /// How many tokens a verifier keeps.
    const MAX: usize = 4096;

    fn get(&self, token: &str) -> Option<Claims> {
        self.lock().get(token).cloned()
    }

    fn insert(&self, token: &str, claims: &Claims, now: i64) {
        let mut accepted = self.lock();
        if accepted.len() >= Self::MAX {
            accepted.retain(|_, claims| !expired(claims, now));
            if accepted.len() >= Self::MAX {
                accepted.clear();
            }
        }
        accepted.insert(token.into(), claims.clone());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Claims>> {
        // A panic elsewhere while holding it leaves a map that is still valid.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether `claims` are past their expiry (and the leeway) at `now`, as `jsonwebtoken` decides.
fn expired(claims: &Claims, now: i64) -> bool {
    claims.exp < now - LEEWAY
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn from_pem(public_pem: &str) -> anyhow::Result<Self> {
        let key = DecodingKey::from_ec_pem(public_pem.as_bytes()).map_err(|err| {
            anyhow::anyhow!("SOUK_JWT_PUBLIC_KEY_FILE: not an ES256 public key PEM: {err}")
        })?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.leeway = LEEWAY.unsigned_abs();
        Ok(Self {
            key,
            validation,
            accepted: Arc::default(),
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, InvalidToken> {
        self.verify_at(token, chrono::Utc::now().timestamp())
    }

    /// [`Self::verify`] at `now` (Unix seconds) for a token accepted before; a new token's
    /// signature and claims are checked by `jsonwebtoken`, on its own clock.
    fn verify_at(&self, token: &str, now: i64) -> Result<Claims, InvalidToken> {
        use jsonwebtoken::errors::ErrorKind;
        if let Some(claims) = self.accepted.get(token) {
            if expired(&claims, now) {
                return Err(InvalidToken("expired".into()));
            }
            return Ok(claims);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| {
                let why = match err.kind() {
                    ErrorKind::ExpiredSignature => "expired",
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        "algorithm not accepted"
                    }
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::InvalidAudience => "wrong audience",
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::MissingRequiredClaim(_) => "missing claim",
                    _ => "malformed",
                };
                InvalidToken(why.into())
            })?;
        self.accepted.insert(token, &claims, now);
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn pair() -> (Signer, Verifier) {
        let keys = KeyPair::generate().expect("keys");
        (
            Signer::from_pem(keys.private_pem.expose(), Duration::from_secs(60)).expect("signer"),
            Verifier::from_pem(&keys.public_pem).expect("verifier"),
        )
    }

    fn b64(value: &serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    }

    fn claims(overrides: serde_json::Value) -> serde_json::Value {
        let now = chrono::Utc::now().timestamp();
        let mut claims = serde_json::json!({
            "sub": Uuid::new_v4(), "role": "admin", "iss": ISSUER, "aud": AUDIENCE,
            "iat": now, "exp": now + 60,
        });
        for (k, v) in overrides.as_object().expect("object") {
            if v.is_null() {
                claims.as_object_mut().expect("object").remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    }

    /// Signs arbitrary claims with the verifier's own key, to test claim checks.
    fn sign_raw(keys: &KeyPair, claims: &serde_json::Value) -> String {
        let key = EncodingKey::from_ec_pem(keys.private_pem.expose().as_bytes()).expect("key");
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &key).expect("sign")
    }

    #[test]
    fn a_signed_token_verifies_with_its_claims() {
        let (signer, verifier) = pair();
        let user = Uuid::new_v4();
        let token = signer.sign(user, Role::Customer).expect("sign");
        let claims = verifier.verify(&token).expect("valid");
        assert_eq!((claims.sub, claims.role), (user, Role::Customer));
        assert_eq!(claims.exp - claims.iat, 60);
    }

    #[test]
    fn alg_none_is_rejected() {
        let (_, verifier) = pair();
        let token = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
            b64(&claims(serde_json::json!({})))
        );
        assert!(verifier.verify(&token).is_err());
    }

    #[test]
    fn hs256_is_rejected_even_when_keyed_with_the_public_key() {
        let keys = KeyPair::generate().expect("keys");
        let verifier = Verifier::from_pem(&keys.public_pem).expect("verifier");
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(serde_json::json!({})),
            &EncodingKey::from_secret(keys.public_pem.as_bytes()),
        )
        .expect("sign");
        assert!(verifier.verify(&token).is_err());
    }

    #[test]
    fn a_tampered_payload_is_rejected() {
        let (signer, verifier) = pair();
        let token = signer.sign(Uuid::new_v4(), Role::Customer).expect("sign");
        let parts: Vec<&str> = token.split('.').collect();
        let forged = b64(&claims(serde_json::json!({"role": "admin"})));
        let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert!(verifier.verify(&tampered).is_err());
    }

    #[test]
    fn expired_tokens_are_rejected() {
        let keys = KeyPair::generate().expect("keys");
        let verifier = Verifier::from_pem(&keys.public_pem).expect("verifier");
        let past = chrono::Utc::now().timestamp() - 3600;
        let token = sign_raw(
            &keys,
            &claims(serde_json::json!({"iat": past - 60, "exp": past})),
        );
        assert!(verifier.verify(&token).is_err());
    }

    #[test]
    fn wrong_issuer_or_audience_or_missing_exp_is_rejected() {
        let keys = KeyPair::generate().expect("keys");
        let verifier = Verifier::from_pem(&keys.public_pem).expect("verifier");
        assert!(
            verifier
                .verify(&sign_raw(&keys, &claims(serde_json::json!({}))))
                .is_ok()
        );
        for bad in [
            serde_json::json!({"iss": "someone-else"}),
            serde_json::json!({"aud": "another-api"}),
            serde_json::json!({"exp": null}),
            serde_json::json!({"iss": null}),
            serde_json::json!({"aud": null}),
            serde_json::json!({"role": "superuser"}),
        ] {
            let token = sign_raw(&keys, &claims(bad.clone()));
            assert!(verifier.verify(&token).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_signed_by_another_key_is_rejected() {
        let (signer, _) = pair();
        let (_, other_verifier) = pair();
        let token = signer.sign(Uuid::new_v4(), Role::Admin).expect("sign");
        assert!(other_verifier.verify(&token).is_err());
    }

    #[test]
    fn an_accepted_token_is_remembered_and_still_expires() {
        let (signer, verifier) = pair();
        let token = signer.sign(Uuid::new_v4(), Role::Customer).expect("sign");
        let claims = verifier.verify(&token).expect("valid");
        assert_eq!(verifier.accepted.get(&token), Some(claims.clone()));
        let last = claims.exp + LEEWAY;
        assert_eq!(verifier.verify_at(&token, last).expect("valid"), claims);
        let err = verifier.verify_at(&token, last + 1).expect_err("expired");
        assert_eq!(err.to_string(), "invalid access token: expired");
        // A clone shares what was accepted.
        assert!(verifier.clone().accepted.get(&token).is_some());
    }

    #[test]
    fn a_refused_token_is_not_remembered_even_beside_its_accepted_original() {
        let (signer, verifier) = pair();
        let token = signer.sign(Uuid::new_v4(), Role::Customer).expect("sign");
        verifier.verify(&token).expect("valid");
        let parts: Vec<&str> = token.split('.').collect();
        let forged = b64(&claims(serde_json::json!({"role": "admin"})));
        let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
        for _ in 0..2 {
            assert!(verifier.verify(&tampered).is_err());
        }
        assert_eq!(verifier.accepted.lock().len(), 1);
    }

    #[test]
    fn the_accepted_tokens_are_bounded_expired_ones_going_first() {
        let accepted = Accepted::default();
        let now = 1_000_000;
        let with_exp = |exp| Claims {
            sub: Uuid::nil(),
            role: Role::Customer,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: exp - 60,
            exp,
        };
        for i in 0..Accepted::MAX - 1 {
            accepted.insert(&format!("old{i}"), &with_exp(now - LEEWAY - 1), now);
        }
        accepted.insert("kept", &with_exp(now + 60), now);
        assert_eq!(accepted.lock().len(), Accepted::MAX);
        accepted.insert("new", &with_exp(now + 60), now);
        assert_eq!(accepted.lock().len(), 2, "the expired ones went");
        assert!(accepted.get("kept").is_some());

        for i in 0..Accepted::MAX - 2 {
            accepted.insert(&format!("live{i}"), &with_exp(now + 60), now);
        }
        accepted.insert("one more", &with_exp(now + 60), now);
        assert_eq!(accepted.lock().len(), 1, "none had expired: all went");
        assert!(accepted.get("one more").is_some());
    }

    #[test]
    fn a_service_token_is_reused_until_half_its_lifetime_and_then_renewed() {
        let (signer, verifier) = pair();
        let tokens = ServiceToken::new(signer);
        let renew_at = || tokens.lock().as_ref().map(|(_, at)| *at);
        let start = Instant::now();
        let first = tokens.get_at(start).expect("token");
        let claims = verifier.verify(&first).expect("valid");
        assert_eq!((claims.sub, claims.role), (Uuid::nil(), Role::Service));
        assert_eq!(renew_at(), Some(start + Duration::from_secs(30)));

        let later = start + Duration::from_secs(29);
        assert_eq!(tokens.get_at(later).expect("token"), first, "reused");
        assert_eq!(renew_at(), Some(start + Duration::from_secs(30)));

        let past_half = start + Duration::from_secs(31);
        tokens.get_at(past_half).expect("token");
        assert_eq!(
            renew_at(),
            Some(past_half + Duration::from_secs(30)),
            "signed again"
        );
    }
}
