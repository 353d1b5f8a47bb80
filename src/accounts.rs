//! Back-office accounts: passwords kept only as argon2id hashes (salted, memory-hard), and
//! session tokens of 128 random bits kept only as their SHA-256 (see `domain::otp`), so that a
//! copy of the database neither reveals a password nor opens a session.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) with a fresh random salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash a password: {e}"))
}

/// Whether `password` matches `hash` (a malformed hash matches nothing).
pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// A hash that matches no password, checked when the e-mail is unknown so that a sign-in
/// takes as long whether or not the account exists.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&crate::domain::otp::new_token()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash_password("guichet-demo").unwrap();
        let b = hash_password("guichet-demo").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify_password("guichet-demo", &a));
        assert!(!verify_password("guichet-demo ", &a));
        assert!(!verify_password("guichet-demo", "not a hash"));
        assert!(!verify_password("anything", decoy_hash()));
    }
}
