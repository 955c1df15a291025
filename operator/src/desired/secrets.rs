//! The Secrets the operator generates: the JWT key pair, the credentials of each managed
//! database and the passwords of the managed NATS's users. They are created once, when absent,
//! and never overwritten (a new key pair would log everybody out; a new password would lock the
//! services out of their data). Randomness comes in
//! as an argument so tests can check the contents.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use p256::SecretKey;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rand_core::CryptoRngCore;

use super::{GeneratedSecret, metadata, nats, postgres};
use crate::shop::Shop;

/// Length of generated database passwords (alphanumeric, so safe in a URL).
pub const PASSWORD_LENGTH: usize = 32;

/// A key pair could not be encoded (never expected with P-256).
#[derive(Debug, thiserror::Error)]
#[error("could not encode a generated secret: {0}")]
pub struct KeyEncodingError(String);

/// Builds the Secret `which` with fresh random contents.
pub fn generate(
    shop: &Shop,
    which: &GeneratedSecret,
    rng: &mut impl CryptoRngCore,
) -> Result<Secret, KeyEncodingError> {
    match which {
        GeneratedSecret::Jwt { name } => jwt(shop, name, rng),
        GeneratedSecret::Database { name, service } => {
            let password = password(rng);
            let data = BTreeMap::from([
                ("username".to_owned(), postgres::USERNAME.to_owned()),
                ("url".to_owned(), postgres::url(shop, *service, &password)),
                ("password".to_owned(), password),
            ]);
            Ok(secret(shop, name, &postgres::component(*service), data))
        }
        GeneratedSecret::Nats { name } => {
            let mut data = BTreeMap::new();
            for user in nats::users() {
                let password = password(rng);
                let mut salt = [0u8; 16];
                rng.fill_bytes(&mut salt);
                // `$2a$`: the prefix NATS's configuration reads as a hash, not as a variable.
                let hash = bcrypt::hash_with_salt(&password, BCRYPT_COST, salt)
                    .map_err(|e| KeyEncodingError(format!("bcrypt: {e}")))?
                    .format_for_version(bcrypt::Version::TwoA);
                data.insert(nats::hash_key(user), hash);
                data.insert(nats::password_key(user), password);
            }
            Ok(secret(shop, name, nats::COMPONENT, data))
        }
    }
}

/// The bcrypt cost of the NATS users' hashes. NATS checks a hash once per connection; the
/// passwords are 190 random bits, so the cost guards nothing a guess could reach and stays low.
const BCRYPT_COST: u32 = 10;

/// `private.pem` (PKCS#8) and `public.pem` (SPKI) of a fresh P-256 key pair, for ES256.
fn jwt(shop: &Shop, name: &str, rng: &mut impl CryptoRngCore) -> Result<Secret, KeyEncodingError> {
    let key = SecretKey::random(rng);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyEncodingError(e.to_string()))?;
    let public = key
        .public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyEncodingError(e.to_string()))?;
    let data = BTreeMap::from([
        (
            souk_contract::file::JWT_PRIVATE_KEY.to_owned(),
            private.to_string(),
        ),
        (souk_contract::file::JWT_PUBLIC_KEY.to_owned(), public),
    ]);
    Ok(secret(shop, name, "jwt", data))
}

fn secret(shop: &Shop, name: &str, component: &str, data: BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: metadata(shop, name.to_owned(), component),
        type_: Some("Opaque".to_owned()),
        string_data: Some(data),
        ..Secret::default()
    }
}

/// A random alphanumeric password, drawn without modulo bias.
fn password(rng: &mut impl CryptoRngCore) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // 62 * 4 = 248: bytes at or above it are rejected so every symbol is equally likely.
    const LIMIT: u8 = 248;
    let mut out = String::with_capacity(PASSWORD_LENGTH);
    let mut buf = [0u8; 64];
    while out.len() < PASSWORD_LENGTH {
        rng.fill_bytes(&mut buf);
        for byte in buf {
            if byte < LIMIT && out.len() < PASSWORD_LENGTH {
                out.push(char::from(ALPHABET[usize::from(byte % 62)]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shop::Component;
    use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
    use rand_core::OsRng;

    fn contents(secret: &Secret) -> &BTreeMap<String, String> {
        secret.string_data.as_ref().expect("string data")
    }

    #[test]
    fn the_jwt_secret_holds_a_matching_p256_key_pair() {
        let shop = Shop::test();
        let secret = generate(
            &shop,
            &GeneratedSecret::Jwt {
                name: "demo-jwt".into(),
            },
            &mut OsRng,
        )
        .expect("generate");
        let data = contents(&secret);
        assert!(data["private.pem"].starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(data["public.pem"].starts_with("-----BEGIN PUBLIC KEY-----"));
        let private = SecretKey::from_pkcs8_pem(&data["private.pem"]).expect("PKCS#8 P-256");
        let public = p256::PublicKey::from_public_key_pem(&data["public.pem"]).expect("SPKI P-256");
        assert_eq!(private.public_key(), public);
        assert_eq!(secret.metadata.name.as_deref(), Some("demo-jwt"));
    }

    #[test]
    fn database_credentials_make_a_url_to_the_managed_service() {
        let shop = Shop::test();
        let secret = generate(
            &shop,
            &GeneratedSecret::Database {
                name: "demo-order-db".into(),
                service: Component::Order,
            },
            &mut OsRng,
        )
        .expect("generate");
        let data = contents(&secret);
        let password = &data["password"];
        assert_eq!(password.len(), PASSWORD_LENGTH);
        assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(data["username"], "souk");
        assert_eq!(
            data["url"],
            format!("postgres://souk:{password}@demo-order-db:5432/order")
        );
    }

    #[test]
    fn two_generations_differ() {
        assert_ne!(password(&mut OsRng), password(&mut OsRng));
    }
}
