//! What protects the citizens' pages and the booking API from the browser's side:
//! - security headers on every answer: a CSP without inline scripts, `nosniff`, no referrer
//!   (personal links carry a token in their URL), no framing, HSTS behind HTTPS;
//! - CSRF: a random token in an `HttpOnly` cookie, repeated in a hidden field of every form and
//!   compared in constant time (double submit); it is the only cookie the pages set;
//! - per-address limits on holds and on codes or links sent, in memory (per instance: the
//!   per-destination limits, which must hold across instances, live in the database).

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

pub const CSRF_COOKIE: &str = "guichet_csrf";
pub const CSRF_FIELD: &str = "csrf";

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Adds the security headers; HSTS only when the public URL is HTTPS (a browser on plain HTTP
/// ignores it, and a developer's `localhost` must not be pinned).
pub async fn headers(https: bool, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    if https {
        set(
            h,
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        );
    }
    response
}

/// The CSRF token of this browser, read from its cookie or new.
#[derive(Debug, Clone)]
pub struct Csrf {
    pub token: String,
    /// The cookie was absent: it must be set with the answer.
    pub fresh: bool,
}

impl Csrf {
    /// Whether a submitted form carries this browser's token. A browser that had no cookie
    /// cannot pass: its form came from elsewhere, or it refuses cookies.
    pub fn accepts(&self, submitted: &str) -> bool {
        use subtle::ConstantTimeEq;
        !self.fresh
            && !submitted.is_empty()
            && bool::from(self.token.as_bytes().ct_eq(submitted.as_bytes()))
    }

    /// The `Set-Cookie` value when the token is new.
    pub fn set_cookie(&self, secure: bool) -> Option<HeaderValue> {
        if !self.fresh {
            return None;
        }
        let secure = if secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{CSRF_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax{secure}",
            self.token
        ))
        .ok()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Csrf {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let existing = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, value)| {
                *name == CSRF_COOKIE
                    && value.len() == 32
                    && value.chars().all(|c| c.is_ascii_hexdigit())
            })
            .map(|(_, value)| value.to_owned());
        Ok(match existing {
            Some(token) => Csrf {
                token,
                fresh: false,
            },
            None => {
                let bytes: [u8; 16] = rand::random();
                Csrf {
                    token: bytes.iter().map(|b| format!("{b:02x}")).collect(),
                    fresh: true,
                }
            }
        })
    }
}

/// The address a request comes from: the peer, or behind a trusted proxy the last address of
/// `X-Forwarded-For` (the one the proxy itself added).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<super::AppState> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &super::AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.config.trust_forwarded_for
            && let Some(ip) = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|a| a.trim().parse::<IpAddr>().ok())
                .next_back()
        {
            return Ok(ClientIp(ip));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            // Served without connection info (a test calling the router directly).
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Ok(ClientIp(peer))
    }
}

/// What one address may do per hour.
pub struct Limits {
    holds: Option<DefaultKeyedRateLimiter<IpAddr>>,
    codes: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// Which per-address allowance an action draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Holding a slot.
    Hold,
    /// Having a code or a personal link sent.
    Send,
}

/// The unit a limit applies to: an IPv4 address, or an IPv6 /64 — one subscriber's network,
/// inside which anyone can pick a new address for every request.
pub(crate) fn subscriber(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
        v4 => v4,
    }
}

/// Keyed limiters keep a cell per address; beyond this many, idle ones are dropped.
const TRACKED_ADDRESSES: usize = 50_000;

impl Limits {
    pub fn new(holds_per_hour: u32, codes_per_hour: u32) -> Arc<Self> {
        let limiter = |per_hour: u32| {
            NonZeroU32::new(per_hour).map(|n| RateLimiter::keyed(Quota::per_hour(n)))
        };
        Arc::new(Self {
            holds: limiter(holds_per_hour),
            codes: limiter(codes_per_hour),
        })
    }

    /// Takes one unit of `allowance` for `ip`; false when the address has used it up.
    pub fn take(&self, allowance: Allowance, ip: IpAddr) -> bool {
        let limiter = match allowance {
            Allowance::Hold => &self.holds,
            Allowance::Send => &self.codes,
        };
        let Some(limiter) = limiter else {
            return true;
        };
        if limiter.len() > TRACKED_ADDRESSES {
            limiter.retain_recent();
        }
        let allowed = limiter.check_key(&subscriber(ip)).is_ok();
        if !allowed {
            metrics::counter!("guichet_rate_limited_total", "what" => match allowance {
                Allowance::Hold => "hold",
                Allowance::Send => "send",
            })
            .increment(1);
            tracing::info!(?allowance, "per-address limit reached");
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_allowance_and_no_more_others_are_not_affected() {
        let limits = Limits::new(3, 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!((0..3).all(|_| limits.take(Allowance::Hold, a)));
        assert!(!limits.take(Allowance::Hold, a));
        assert!(limits.take(Allowance::Hold, b));
        // Every address of one IPv6 /64 shares an allowance.
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(limits.take(Allowance::Hold, v6a));
        assert!(limits.take(Allowance::Hold, v6b));
        assert!(limits.take(Allowance::Hold, v6a));
        assert!(!limits.take(Allowance::Hold, v6b));
        assert!(limits.take(Allowance::Hold, "2001:db8:1:3::1".parse().unwrap()));
        // 0 means no limit.
        assert!((0..1000).all(|_| limits.take(Allowance::Send, a)));
    }

    #[test]
    fn a_fresh_token_never_passes_and_a_wrong_one_fails() {
        let fresh = Csrf {
            token: "a".repeat(32),
            fresh: true,
        };
        assert!(!fresh.accepts(&"a".repeat(32)));
        let known = Csrf {
            token: "a".repeat(32),
            fresh: false,
        };
        assert!(known.accepts(&"a".repeat(32)));
        assert!(!known.accepts(&"b".repeat(32)));
        assert!(!known.accepts(""));
    }
}
