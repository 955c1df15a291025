//! The caller's identity on gRPC calls. The gateway forwards the client's access token as
//! `authorization: Bearer <jwt>` metadata and every service verifies it itself, so a direct gRPC
//! call cannot claim a role it does not have.

use tonic::{Request, metadata::MetadataMap};
use uuid::Uuid;

use crate::{
    Error,
    jwt::{Role, Verifier},
};

const AUTHORIZATION: &str = "authorization";

/// Who is calling, as proven by a verified token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: Uuid,
    pub role: Role,
    /// The token itself, to forward on calls made on the caller's behalf.
    pub token: String,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn require_admin(&self) -> Result<(), Error> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Error::PermissionDenied("this needs role admin".into()))
        }
    }

    pub fn require_service(&self) -> Result<(), Error> {
        if self.role == Role::Service {
            Ok(())
        } else {
            Err(Error::PermissionDenied(
                "only Souk services may call this".into(),
            ))
        }
    }

    /// A request carrying this caller's token, for a call made on its behalf.
    pub fn request<T>(&self, message: T) -> Request<T> {
        with_token(message, &self.token)
    }
}

/// The verified caller of a request; `Unauthenticated` without a valid bearer token.
pub fn caller(metadata: &MetadataMap, verifier: &Verifier) -> Result<Caller, Error> {
    let value = metadata
        .get(AUTHORIZATION)
        .ok_or_else(|| Error::Unauthenticated("missing bearer token".into()))?
        .to_str()
        .map_err(|_| Error::Unauthenticated("malformed Authorization header".into()))?;
    from_authorization(value, verifier)
}

/// The verified caller of an `Authorization` header's value (gRPC metadata or HTTP header).
pub fn from_authorization(value: &str, verifier: &Verifier) -> Result<Caller, Error> {
    let token = parse_bearer(value).ok_or_else(|| {
        Error::Unauthenticated("the Authorization header must be `Bearer <token>`".into())
    })?;
    verified(token, verifier)
}

/// The caller a token proves, if the verifier accepts it.
pub fn verified(token: &str, verifier: &Verifier) -> Result<Caller, Error> {
    let claims = verifier
        .verify(token)
        .map_err(|err| Error::Unauthenticated(err.to_string()))?;
    Ok(Caller {
        user_id: claims.sub,
        role: claims.role,
        token: token.to_owned(),
    })
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive), if it is one.
pub fn parse_bearer(value: &str) -> Option<&str> {
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Some(token.trim())
        }
        _ => None,
    }
}

/// A request that presents `token` as its bearer token.
pub fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert(AUTHORIZATION, value);
    }
    request
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::jwt::{KeyPair, Signer};

    #[test]
    fn a_forwarded_token_identifies_the_caller() {
        let keys = KeyPair::generate().expect("keys");
        let signer =
            Signer::from_pem(keys.private_pem.expose(), Duration::from_secs(60)).expect("signer");
        let verifier = Verifier::from_pem(&keys.public_pem).expect("verifier");
        let user = Uuid::new_v4();
        let token = signer.sign(user, Role::Customer).expect("token");

        let request = with_token((), &token);
        let caller = caller(request.metadata(), &verifier).expect("caller");
        assert_eq!(caller.user_id, user);
        assert!(caller.require_admin().is_err());
    }

    #[test]
    fn missing_or_malformed_tokens_are_unauthenticated() {
        let keys = KeyPair::generate().expect("keys");
        let verifier = Verifier::from_pem(&keys.public_pem).expect("verifier");
        let bare = Request::new(());
        assert!(matches!(
            caller(bare.metadata(), &verifier),
            Err(Error::Unauthenticated(_))
        ));
        let mut basic = Request::new(());
        basic
            .metadata_mut()
            .insert(AUTHORIZATION, "Basic abc".parse().expect("ascii"));
        assert!(matches!(
            caller(basic.metadata(), &verifier),
            Err(Error::Unauthenticated(_))
        ));
        let garbage = with_token((), "not-a-jwt");
        assert!(matches!(
            caller(garbage.metadata(), &verifier),
            Err(Error::Unauthenticated(_))
        ));
    }
}
