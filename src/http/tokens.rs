//! Access tokens: HS256 JWTs with `sub`, `role`, `exp`, `iat`, `jti` (and `vehicle_type` for
//! drivers), minted by `hexdispatch token` and verified on every request and socket.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::dispatch::Role;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: Uuid,
    /// Role.
    pub role: Role,
    /// Expiry, epoch seconds.
    pub exp: u64,
    /// Issued at, epoch seconds.
    pub iat: u64,
    /// Token id.
    pub jti: Uuid,
    /// Vehicle type of a driver that has no profile yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vehicle_type: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token's lifetime is over.
    #[error("the token has expired")]
    Expired,
    /// Bad signature, bad shape or bad claims.
    #[error("the token is invalid: {0}")]
    Invalid(String),
    /// A token could not be signed.
    #[error("could not sign a token: {0}")]
    Signing(String),
}

/// Signing and verification keys.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens whose signature was checked, with their claims: an app sends the same token with
    /// every request, and checking it again (base64, JSON, HMAC) is most of what a cheap
    /// request costs. Keyed by a 128-bit hash of the whole token under two secret random keys
    /// (so nobody can craft a token that collides with another); its expiry is still checked on
    /// every use.
    verified: dashmap::DashMap<u128, Claims>,
    hashers: (std::hash::RandomState, std::hash::RandomState),
}

/// Most tokens [`JwtKeys`] remembers (about 2 MB); past it the memory starts afresh.
const VERIFIED_TOKENS: usize = 16_384;

impl JwtKeys {
    /// Keys for the HS256 secret.
    #[must_use]
    pub fn new(secret: &SecretString) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            verified: dashmap::DashMap::new(),
            hashers: (std::hash::RandomState::new(), std::hash::RandomState::new()),
        }
    }

    /// Signs a token for `sub` in `role`, valid for `ttl_s` seconds from now.
    ///
    /// # Errors
    ///
    /// [`TokenError::Signing`] if the signer fails.
    pub fn issue(
        &self,
        sub: Uuid,
        role: Role,
        vehicle_type: Option<String>,
        ttl_s: u64,
    ) -> Result<String, TokenError> {
        let now = now_s();
        let claims = Claims {
            sub,
            role,
            exp: now.saturating_add(ttl_s),
            iat: now,
            jti: Uuid::now_v7(),
            vehicle_type,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// Verifies a token's signature and expiry and returns its claims.
    ///
    /// # Errors
    ///
    /// [`TokenError::Expired`] or [`TokenError::Invalid`].
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        use std::hash::BuildHasher as _;
        let key = u128::from(self.hashers.0.hash_one(token)) << 64
            | u128::from(self.hashers.1.hash_one(token));
        if let Some(claims) = self.verified.get(&key) {
            if claims.exp.saturating_add(self.validation.leeway) >= now_s() {
                return Ok(claims.clone());
            }
            drop(claims);
            self.verified.remove(&key);
        }
        let claims = decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?;
        if self.verified.len() >= VERIFIED_TOKENS {
            self.verified.clear();
        }
        self.verified.insert(key, claims.clone());
        Ok(claims)
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> JwtKeys {
        JwtKeys::new(&SecretString::from(secret))
    }

    #[test]
    fn issued_tokens_verify_and_carry_their_claims() {
        let k = keys("a-test-secret-of-some-length");
        let sub = Uuid::now_v7();
        let token = k.issue(sub, Role::Driver, Some("xl".into()), 60).unwrap();
        let claims = k.verify(&token).unwrap();
        assert_eq!(
            (claims.sub, claims.role, claims.vehicle_type.as_deref()),
            (sub, Role::Driver, Some("xl"))
        );
        assert!(claims.exp >= claims.iat + 60);
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_changed_one_is_checked_afresh() {
        let k = keys("a-test-secret-of-some-length");
        let token = k.issue(Uuid::now_v7(), Role::Rider, None, 60).unwrap();
        assert!(k.verify(&token).is_ok());
        assert!(k.verify(&token).is_ok(), "the remembered answer");
        // One character of the signature changed: not the remembered token.
        let mut forged = token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(matches!(k.verify(&forged), Err(TokenError::Invalid(_))));
        // A remembered entry past its expiry (and the leeway) is not used: the token is checked
        // afresh (and here, its real expiry being an hour later, it passes with its own claims).
        let real = k.verify(&token).unwrap();
        let stale = Claims {
            exp: now_s() - 3_600,
            ..real.clone()
        };
        let key = *k.verified.iter().next().unwrap().key();
        k.verified.insert(key, stale);
        assert_eq!(k.verify(&token), Ok(real));
    }

    #[test]
    fn forged_expired_and_garbage_tokens_are_refused() {
        let k = keys("a-test-secret-of-some-length");
        let other = keys("another-secret-entirely-here");
        let forged = other
            .issue(Uuid::now_v7(), Role::Operator, None, 60)
            .unwrap();
        assert!(matches!(k.verify(&forged), Err(TokenError::Invalid(_))));
        let claims = Claims {
            sub: Uuid::now_v7(),
            role: Role::Rider,
            exp: now_s() - 3_600,
            iat: now_s() - 7_200,
            jti: Uuid::now_v7(),
            vehicle_type: None,
        };
        let expired = encode(&Header::new(Algorithm::HS256), &claims, &k.encoding).unwrap();
        assert_eq!(k.verify(&expired), Err(TokenError::Expired));
        assert!(k.verify("not.a.token").is_err());
        assert!(k.verify("").is_err());
    }
}
