//! A local SMS provider speaking Twilio's `CreateMessage` contract, for tests. It accepts only
//! requests that match the operation in `fixtures/twilio_create_message.json` (extracted from
//! Twilio's OpenAPI document): the path and its `AccountSid`, HTTP Basic credentials, the form
//! content type, the required and known fields. It answers 201 with a message resource, and can
//! be told to answer 429 or 500, or to hang.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use serde_json::{Value, json};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "test-auth-token";
pub const FROM: &str = "+33465710000";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Accept,
    TooManyRequests,
    ServerError,
    Hang,
}

#[derive(Debug, Clone)]
pub struct Sent {
    pub sid: String,
    pub to: String,
    pub body: String,
    pub status_callback: Option<String>,
}

#[derive(Default)]
struct Inner {
    sent: Vec<Sent>,
    rejected: Vec<String>,
    /// Answers to give before going back to `Accept`.
    script: VecDeque<Mode>,
    requests: usize,
}

#[derive(Clone)]
pub struct FakeTwilio {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
    spec: Arc<Value>,
}

impl FakeTwilio {
    pub async fn start() -> FakeTwilio {
        let spec: Value =
            serde_json::from_str(include_str!("fixtures/twilio_create_message.json")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let fake = FakeTwilio {
            base,
            inner: Arc::default(),
            spec: Arc::new(spec),
        };
        let router = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                post(create_message),
            )
            .fallback(|| async { (StatusCode::NOT_FOUND, "no such Twilio resource") })
            .with_state(fake.clone());
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        fake
    }

    /// The same fake, reached at another address (one where nothing listens, say).
    pub fn with_base(mut self, base: String) -> Self {
        self.base = base;
        self
    }

    /// The next answers, in order, before it accepts again.
    pub fn script(&self, modes: &[Mode]) {
        self.inner
            .lock()
            .unwrap()
            .script
            .extend(modes.iter().copied());
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.inner.lock().unwrap().sent.clone()
    }

    pub fn sent_to(&self, to: &str) -> Vec<Sent> {
        self.sent().into_iter().filter(|s| s.to == to).collect()
    }

    pub fn rejected(&self) -> Vec<String> {
        self.inner.lock().unwrap().rejected.clone()
    }

    pub fn requests(&self) -> usize {
        self.inner.lock().unwrap().requests
    }

    /// The six-digit code of the last SMS to `to`.
    pub fn last_code(&self, to: &str) -> Option<String> {
        self.sent_to(to).last().and_then(|s| extract_code(&s.body))
    }
}

pub fn extract_code(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .map(str::to_owned)
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        })),
    )
        .into_response()
}

/// Checks a request against the CreateMessage operation; the reason it does not conform.
fn check(
    spec: &Value,
    account: &str,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<(), String> {
    let sid_ok = account.len() == 34
        && account.starts_with("AC")
        && account[2..].chars().all(|c| c.is_ascii_hexdigit());
    if !sid_ok {
        return Err(format!(
            "AccountSid {account} does not match ^AC[0-9a-fA-F]{{32}}$"
        ));
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return Err("HTTP Basic credentials missing or wrong".into());
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with(spec["content_type"].as_str().unwrap()) {
        return Err(format!("content type {content_type}"));
    }
    let known: HashSet<&str> = spec["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for (name, value) in form {
        if !known.contains(name.as_str()) {
            return Err(format!("unknown field {name}"));
        }
        if let Some(allowed) = spec["properties"][name]["enum"].as_array()
            && !allowed.iter().any(|a| a.as_str() == Some(value))
        {
            return Err(format!("{name}={value} not in its enumeration"));
        }
    }
    let has = |name: &str| form.iter().any(|(k, v)| k == name && !v.is_empty());
    for required in spec["required"].as_array().unwrap() {
        if !has(required.as_str().unwrap()) {
            return Err(format!("required field {required} missing"));
        }
    }
    // From the operation's description: a sender, and something to send.
    if !has("From") && !has("MessagingServiceSid") {
        return Err("From or MessagingServiceSid is required".into());
    }
    if !has("Body") && !has("MediaUrl") && !has("ContentSid") {
        return Err("Body, MediaUrl or ContentSid is required".into());
    }
    if form
        .iter()
        .any(|(k, v)| k == "Body" && v.chars().count() > 1600)
    {
        return Err("Body longer than 1,600 characters".into());
    }
    Ok(())
}

async fn create_message(
    State(fake): State<FakeTwilio>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mode = {
        let mut inner = fake.inner.lock().unwrap();
        inner.requests += 1;
        inner.script.pop_front().unwrap_or(Mode::Accept)
    };
    let form: Vec<(String, String)> = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, 21620, &e.to_string()),
    };
    if let Err(reason) = check(&fake.spec, &account, &headers, &form) {
        fake.inner.lock().unwrap().rejected.push(reason.clone());
        return error(StatusCode::BAD_REQUEST, 21604, &reason);
    }
    match mode {
        Mode::Accept => {}
        Mode::TooManyRequests => {
            return error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
        }
        Mode::ServerError => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                20500,
                "Internal Server Error",
            );
        }
        Mode::Hang => {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
    }
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
    let body_text = field("Body").unwrap_or_default();
    let segments = guichet::domain::gsm7::segments(&body_text);
    fake.inner.lock().unwrap().sent.push(Sent {
        sid: sid.clone(),
        to: field("To").unwrap_or_default(),
        body: body_text.clone(),
        status_callback: field("StatusCallback"),
    });
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "account_sid": account,
            "sid": sid,
            "status": "queued",
            "to": field("To"),
            "from": field("From"),
            "body": body_text,
            "num_segments": segments.to_string(),
            "num_media": "0",
            "direction": "outbound-api",
            "error_code": null,
            "error_message": null,
            "price": null,
            "date_created": "Mon, 30 Nov 2026 07:00:00 +0000",
            "api_version": "2010-04-01",
            "uri": format!("/2010-04-01/Accounts/{account}/Messages/{sid}.json"),
        })),
    )
        .into_response()
}
