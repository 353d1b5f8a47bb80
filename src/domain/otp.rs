//! One-time codes ("codes de confirmation"): six digits from the operating system's CSPRNG,
//! kept only as an HMAC-SHA256 keyed with a server secret and bound to the appointment, valid
//! ten minutes, used once, burnt after five wrong tries; at most three sends per destination in
//! ten minutes and ten in a day. The limits are applied by the engine inside the booking transaction.

use chrono::Duration;
use hmac::{KeyInit, Mac};
use rand::RngExt;
use sha2::Sha256;
use uuid::Uuid;

use super::values::InvalidValue;

pub const VALIDITY: Duration = Duration::minutes(10);
pub const MAX_ATTEMPTS: i32 = 5;
pub const MAX_SENDS: i64 = 3;
pub const SEND_WINDOW: Duration = Duration::minutes(10);
pub const MAX_SENDS_PER_DAY: i64 = 10;

/// Six digits, as typed by a person (spaces and dashes ignored).
#[derive(Clone, PartialEq, Eq)]
pub struct OtpCode(String);

impl OtpCode {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let digits: String = input
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-' && *c != '.')
            .collect();
        if digits.len() == 6 && digits.chars().all(|c| c.is_ascii_digit()) {
            Ok(Self(digits))
        } else {
            Err(InvalidValue(
                "Le code de confirmation compte 6 chiffres.".to_owned(),
            ))
        }
    }

    /// A fresh code from the thread's CSPRNG (ChaCha, seeded by the operating system).
    pub fn generate() -> Self {
        Self(format!("{:06}", rand::rng().random_range(0..1_000_000u32)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Codes never appear in logs.
impl std::fmt::Debug for OtpCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtpCode(******)")
    }
}

fn mac(key: &[u8], appointment: Uuid, code: &OtpCode) -> hmac::Hmac<Sha256> {
    let mut mac =
        <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(appointment.as_bytes());
    mac.update(code.0.as_bytes());
    mac
}

/// The stored form of a code: hex HMAC-SHA256 over the appointment id and the digits, so that a
/// leaked table neither reveals codes nor lets one be replayed on another appointment.
pub fn hash(key: &[u8], appointment: Uuid, code: &OtpCode) -> String {
    hex(&mac(key, appointment, code).finalize().into_bytes())
}

/// Compares in constant time.
pub fn verify(key: &[u8], appointment: Uuid, code: &OtpCode, stored: &str) -> bool {
    let Some(expected) = unhex(stored) else {
        return false;
    };
    mac(key, appointment, code).verify_slice(&expected).is_ok()
}

/// A personal link's token: 128 random bits, URL-safe (22 characters).
pub fn new_token() -> String {
    use base64::Engine;
    let bytes: [u8; 16] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored of a token: its SHA-256. 128 random bits need no salt or key.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex(&Sha256::digest(token.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(OtpCode::parse(" 123 456 ").unwrap().as_str(), "123456");
        assert!(OtpCode::parse("12345").is_err());
        assert!(OtpCode::parse("12345a").is_err());
        assert_eq!(
            format!("{:?}", OtpCode::parse("123456").unwrap()),
            "OtpCode(******)"
        );
        for _ in 0..100 {
            let code = OtpCode::generate();
            assert_eq!(code.as_str().len(), 6);
            assert!(OtpCode::parse(code.as_str()).is_ok());
        }
    }

    #[test]
    fn tokens() {
        let token = new_token();
        assert_eq!(token.len(), 22);
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(token, new_token());
        assert_eq!(token_hash(&token).len(), 64);
        assert_eq!(token_hash(&token), token_hash(&token));
    }

    #[test]
    fn hashes_are_keyed_and_bound_to_the_appointment() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let code = OtpCode::parse("042042").unwrap();
        let stored = hash(b"secret", a, &code);
        assert!(!stored.contains("042042"));
        assert!(verify(b"secret", a, &code, &stored));
        assert!(!verify(b"other", a, &code, &stored));
        assert!(!verify(b"secret", b, &code, &stored));
        assert!(!verify(
            b"secret",
            a,
            &OtpCode::parse("042043").unwrap(),
            &stored
        ));
        assert!(!verify(b"secret", a, &code, "zz"));
    }
}
