//! Passwords and refresh tokens: argon2id hashes with the configured cost, and refresh tokens
//! that are random, handed out once and stored only as their SHA-256 hash.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::AuthSettings;

/// Hashes and checks passwords with argon2id.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
}

impl Passwords {
    /// Hashing with the configured cost.
    ///
    /// # Errors
    ///
    /// Invalid parameters (caught by config validation first).
    pub fn new(settings: &AuthSettings) -> Result<Self, argon2::Error> {
        Ok(Self {
            params: Params::new(
                settings.argon2_memory_kib,
                settings.argon2_iterations,
                1,
                None,
            )?,
        })
    }

    fn argon(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// A PHC string for `password` with a fresh salt.
    ///
    /// # Errors
    ///
    /// Argon2's error (not expected for valid parameters).
    pub fn hash(&self, password: &str) -> Result<String, argon2::password_hash::Error> {
        let salt = SaltString::generate(&mut OsRng);
        Ok(self
            .argon()
            .hash_password(password.as_bytes(), &salt)?
            .to_string())
    }

    /// Whether `password` matches `phc`.
    #[must_use]
    pub fn verify(&self, password: &str, phc: &str) -> bool {
        PasswordHash::new(phc).is_ok_and(|hash| {
            self.argon()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
    }
}

/// A new random refresh token (256 bits as hex) and the hash it is stored under.
#[must_use]
pub fn refresh_token() -> (String, String) {
    let token = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let hash = token_hash(&token);
    (token, hash)
}

/// The stored form of a refresh token.
#[must_use]
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthSettings;

    fn passwords() -> Passwords {
        Passwords::new(&AuthSettings {
            argon2_memory_kib: 1_024,
            argon2_iterations: 1,
            ..AuthSettings::default()
        })
        .unwrap()
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let p = passwords();
        let a = p.hash("correct horse battery staple").unwrap();
        let b = p.hash("correct horse battery staple").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "each hash has its own salt");
        assert!(p.verify("correct horse battery staple", &a));
        assert!(!p.verify("correct horse battery stapler", &a));
        assert!(!p.verify("x", "not a phc string"));
    }

    #[test]
    fn refresh_tokens_are_random_and_stored_hashed() {
        let (t1, h1) = refresh_token();
        let (t2, _) = refresh_token();
        assert_ne!(t1, t2);
        assert_eq!(t1.len(), 64);
        assert_eq!(h1, token_hash(&t1));
        assert_ne!(h1, t1);
    }
}
