//! What the database keeps of a request sent with an `Idempotency-Key`, so that a retry gets
//! the first answer again: nothing it could give away. The answer to a confirmation carries the
//! citizen's personal token, which the database otherwise holds only hashed; kept in clear for
//! 24 hours beside the key that replays it, it would let whoever reads the table cancel or move
//! that appointment. So the key is kept as a keyed hash, and the answer sealed (ChaCha20-Poly1305)
//! under a key derived from the server secret and the client's key: the client that holds its
//! key, and only it, can have its answer again.

use base64::Engine;
use hmac::{KeyInit, Mac};
use ring::aead;
use sha2::Sha256;

use super::otp::hex;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Tells a sealed answer from anything else in the column, and which scheme sealed it.
const PREFIX: &str = "v1.";

/// One client key in one scope (a route), with what derives from it.
pub struct IdempotencyKey {
    lookup: String,
    request: HmacSha256,
    seal: [u8; 32],
}

impl IdempotencyKey {
    /// `secret` is the key every instance shares; `scope` the route, `key` the client's header.
    pub fn new(secret: &[u8], scope: &str, key: &str) -> Self {
        let mut derive = mac(secret);
        derive.update(b"guichet idempotency-key\0");
        derive.update(scope.as_bytes());
        derive.update(b"\0");
        derive.update(key.as_bytes());
        let root = derive.finalize().into_bytes();
        let part = |label: &[u8]| {
            let mut m = mac(&root);
            m.update(label);
            m
        };
        Self {
            lookup: hex(&part(b"lookup").finalize().into_bytes()),
            request: part(b"request"),
            seal: part(b"seal").finalize().into_bytes().into(),
        }
    }

    /// The key as stored and looked up: reveals neither the client's key nor its scope.
    pub fn lookup(&self) -> &str {
        &self.lookup
    }

    /// What identifies the request (method, path, body), so that the same key with another
    /// request is told apart. Keyed: the path may carry a personal token, the body a code.
    pub fn request_hash(&self, method: &str, path: &str, body: &[u8]) -> String {
        let mut m = self.request.clone();
        for part in [method.as_bytes(), b"\0", path.as_bytes(), b"\0", body] {
            m.update(part);
        }
        hex(&m.finalize().into_bytes())
    }

    /// The answer as stored.
    pub fn seal(&self, answer: &str) -> String {
        let nonce: [u8; aead::NONCE_LEN] = rand::random();
        let mut sealed = answer.as_bytes().to_vec();
        self.cipher()
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                self.aad(),
                &mut sealed,
            )
            .expect("an answer of this API is far below ChaCha20-Poly1305's limit");
        let mut out = nonce.to_vec();
        out.append(&mut sealed);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
        )
    }

    /// The stored answer in clear, or `None` when it was not sealed under this key (another
    /// server secret, a row changed by hand).
    pub fn open(&self, stored: &str) -> Option<String> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(stored.strip_prefix(PREFIX)?)
            .ok()?;
        if bytes.len() < aead::NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(aead::NONCE_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let answer = self
            .cipher()
            .open_in_place(nonce, self.aad(), &mut sealed)
            .ok()?;
        String::from_utf8(answer.to_vec()).ok()
    }

    fn cipher(&self) -> aead::LessSafeKey {
        let key = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &self.seal)
            .expect("a ChaCha20-Poly1305 key is 32 bytes");
        aead::LessSafeKey::new(key)
    }

    /// Binds a sealed answer to its row: moved to another key's row, it does not open.
    fn aad(&self) -> aead::Aad<&[u8]> {
        aead::Aad::from(self.lookup.as_bytes())
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any size")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"server secret";
    const ANSWER: &str = r#"{"status":"confirmed","token":"q8Zr2v0bXkY3mWc1nE5tPa"}"#;

    #[test]
    fn an_answer_opens_with_its_key_only() {
        let key = IdempotencyKey::new(SECRET, "/confirm", "k-1");
        let sealed = key.seal(ANSWER);
        assert!(!sealed.contains("q8Zr2v0bXkY3mWc1nE5tPa"), "{sealed}");
        assert_eq!(key.open(&sealed).as_deref(), Some(ANSWER));
        // Sealed twice, it differs (a fresh nonce) and opens the same.
        let again = key.seal(ANSWER);
        assert_ne!(again, sealed);
        assert_eq!(key.open(&again).as_deref(), Some(ANSWER));
        for other in [
            IdempotencyKey::new(SECRET, "/confirm", "k-2"),
            IdempotencyKey::new(SECRET, "/hold", "k-1"),
            IdempotencyKey::new(b"another secret", "/confirm", "k-1"),
        ] {
            assert_eq!(other.open(&sealed), None);
            assert_ne!(other.lookup(), key.lookup());
        }
    }

    #[test]
    fn a_damaged_answer_does_not_open() {
        let key = IdempotencyKey::new(SECRET, "/confirm", "k-1");
        let sealed = key.seal(ANSWER);
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 3;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for stored in [
            flipped.as_str(),
            &sealed[..sealed.len() - 4],
            "v1.",
            "v1.!!",
            ANSWER,
            "",
        ] {
            assert_eq!(key.open(stored), None, "{stored}");
        }
    }

    #[test]
    fn the_stored_forms_reveal_neither_key_nor_request() {
        let key = IdempotencyKey::new(SECRET, "/api/v1/manage/{token}/cancel", "retry-42");
        assert_eq!(key.lookup().len(), 64);
        assert!(!key.lookup().contains("retry"));
        let path = "/api/v1/manage/q8Zr2v0bXkY3mWc1nE5tPa/cancel";
        let hash = key.request_hash("POST", path, b"{}");
        assert_eq!(hash, key.request_hash("POST", path, b"{}"));
        assert_ne!(hash, key.request_hash("POST", path, b"{ }"));
        assert_ne!(
            hash,
            IdempotencyKey::new(
                b"another secret",
                "/api/v1/manage/{token}/cancel",
                "retry-42"
            )
            .request_hash("POST", path, b"{}")
        );
    }
}
