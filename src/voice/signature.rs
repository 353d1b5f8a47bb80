//! `X-Twilio-Signature`: HMAC-SHA1, keyed with the account's auth token, over the URL Twilio
//! requested followed by every form parameter (name then value, names in byte order; for a
//! repeated name its distinct values in sorted order), Base64-encoded. Like the official
//! libraries, the URL is also tried without its port and with the scheme's default port. The URL
//! is rebuilt from `GUICHET_PUBLIC_URL` and the path and query as received, never from the Host
//! header. A signature carries no timestamp: replays are made harmless by the handlers.

use base64::Engine;
use hmac::{KeyInit, Mac};
use sha1::Sha1;

type HmacSha1 = hmac::Hmac<Sha1>;

fn payload(url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut data = url.to_owned();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    data
}

/// The signature Twilio would send for this URL and these parameters.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut mac =
        <HmacSha1 as KeyInit>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(payload(url, params).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `https://host/path` ↔ `https://host:443/path`, `http://host:80/…` ↔ `http://host/…`.
fn port_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return variants;
    };
    let default_port = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return variants,
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
            variants.push(format!("{scheme}://{host}{tail}"));
        }
        _ => variants.push(format!("{scheme}://{authority}:{default_port}{tail}")),
    }
    variants
}

/// Checks a received signature in constant time, against the URL with and without its port.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    let Ok(received) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    port_variants(url).iter().any(|candidate| {
        let mut mac =
            <HmacSha1 as KeyInit>::new_from_slice(auth_token.as_bytes()).expect("any key length");
        mac.update(payload(candidate, params).as_bytes());
        mac.verify_slice(&received).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn voice_params() -> Vec<(String, String)> {
        p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    // The test vectors of ../shared/reference/TWILIO.md.
    #[test]
    fn signature_of_the_url_as_given() {
        assert_eq!(
            sign("12345", URL, &voice_params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(verify(
            "12345",
            URL,
            &voice_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn signature_with_the_default_port() {
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert_eq!(
            sign("12345", with_port, &voice_params()),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        // Twilio signed with the port, we know the URL without it: accepted both ways.
        assert!(verify(
            "12345",
            URL,
            &voice_params(),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        ));
        assert!(verify(
            "12345",
            with_port,
            &voice_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn signature_over_http_and_other_ports() {
        let http = "http://mycompany.com:80/myapp.php?foo=1&bar=2";
        assert_eq!(
            sign("12345", http, &voice_params()),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        );
        assert!(verify(
            "12345",
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            &voice_params(),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
        let other = "http://mycompany.com:1234/myapp.php?foo=1&bar=2";
        assert_eq!(
            sign("12345", other, &voice_params()),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        );
        assert!(verify(
            "12345",
            other,
            &voice_params(),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        ));
    }

    #[test]
    fn repeated_keys() {
        let params = p(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(sign("12345", URL, &params), "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
    }

    #[test]
    fn json_body_vector() {
        let body = r#"{"property": "value", "boolean": true}"#;
        use sha2::Digest;
        let hash = crate::domain::otp::hex(&sha2::Sha256::digest(body.as_bytes()));
        assert_eq!(
            hash,
            "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
        );
        let url = format!("{URL}&bodySHA256={hash}");
        assert_eq!(sign("12345", &url, &[]), "a9nBmqA0ju/hNViExpshrM61xv4=");
    }

    #[test]
    fn forgeries_fail() {
        assert!(!verify(
            "12345",
            URL,
            &voice_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B9="
        ));
        assert!(!verify(
            "other",
            URL,
            &voice_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!verify("12345", URL, &voice_params(), "not base64!"));
        assert!(!verify("12345", URL, &voice_params(), ""));
        let mut tampered = voice_params();
        tampered[2].1 = "9999".into();
        assert!(!verify(
            "12345",
            URL,
            &tampered,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }
}
