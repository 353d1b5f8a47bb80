//! Sending SMS. [`TwilioSms`] speaks the Twilio REST contract (`CreateMessage`: Basic auth, form
//! fields, 201 with the message's SID and segments, JSON errors); any provider with a compatible
//! API works by changing the API base. Without credentials, [`ConsoleSms`] logs each message and
//! keeps it in the [`DevOutbox`] that the demo shows at `/dev/outbox`.
//!
//! The outcome says what the outbox may do next: `RetryLater` when nothing can have left (429,
//! connection refused), `Ambiguous` when it may have (timeout, 5xx) — never resent blindly.

use crate::domain::gsm7;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingSms {
    pub to: String,
    pub body: String,
    /// Where the provider reports delivery.
    pub status_callback: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsOutcome {
    Accepted {
        sid: String,
        segments: i32,
    },
    /// Not processed: safe to send again later.
    RetryLater {
        reason: String,
    },
    /// May have been sent: do not send again.
    Ambiguous {
        reason: String,
    },
    /// Refused for good (invalid number, …).
    Rejected {
        reason: String,
    },
}

#[async_trait]
pub trait SmsSender: Send + Sync + 'static {
    async fn send(&self, sms: &OutgoingSms) -> SmsOutcome;
}

/// Who the SMS comes from: a number (or alphanumeric sender) or a messaging service.
#[derive(Debug, Clone)]
pub enum SmsSenderId {
    From(String),
    MessagingService(String),
}

pub struct TwilioSms {
    client: reqwest::Client,
    url: String,
    account_sid: String,
    auth_token: SecretString,
    sender: SmsSenderId,
}

/// The parts of Twilio's 201 answer guichet reads.
#[derive(Debug, Deserialize)]
struct CreatedMessage {
    sid: String,
    /// A string in Twilio's answers ("1").
    num_segments: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    code: Option<i64>,
    message: Option<String>,
}

impl TwilioSms {
    pub fn new(
        api_base: &str,
        account_sid: &str,
        auth_token: SecretString,
        sender: SmsSenderId,
        timeout: Duration,
    ) -> reqwest::Result<Self> {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()?;
        Ok(Self {
            client,
            url: format!(
                "{}/2010-04-01/Accounts/{account_sid}/Messages.json",
                api_base.trim_end_matches('/')
            ),
            account_sid: account_sid.to_owned(),
            auth_token,
            sender,
        })
    }
}

#[async_trait]
impl SmsSender for TwilioSms {
    async fn send(&self, sms: &OutgoingSms) -> SmsOutcome {
        let mut form: Vec<(&str, &str)> = vec![("To", &sms.to), ("Body", &sms.body)];
        match &self.sender {
            SmsSenderId::From(from) => form.push(("From", from)),
            SmsSenderId::MessagingService(sid) => form.push(("MessagingServiceSid", sid)),
        }
        if let Some(callback) = &sms.status_callback {
            form.push(("StatusCallback", callback));
        }
        let response = self
            .client
            .post(&self.url)
            .basic_auth(&self.account_sid, Some(self.auth_token.expose_secret()))
            .form(&form)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            // Refused before anything was sent.
            Err(e) if e.is_connect() => {
                return SmsOutcome::RetryLater {
                    reason: format!("connection: {e}"),
                };
            }
            // A timeout (or a broken answer) after the request left: it may have been sent.
            Err(e) => {
                return SmsOutcome::Ambiguous {
                    reason: format!("no answer: {e}"),
                };
            }
        };
        let status = response.status();
        let body = match response.text().await {
            Ok(body) => body,
            Err(e) if status.is_success() => {
                return SmsOutcome::Ambiguous {
                    reason: format!("answer lost: {e}"),
                };
            }
            Err(_) => String::new(),
        };
        if status.is_success() {
            return match serde_json::from_str::<CreatedMessage>(&body) {
                Ok(created) => SmsOutcome::Accepted {
                    segments: created
                        .num_segments
                        .as_ref()
                        .and_then(|v| match v {
                            serde_json::Value::String(s) => s.parse().ok(),
                            serde_json::Value::Number(n) => n.as_i64().map(|n| n as i32),
                            _ => None,
                        })
                        .unwrap_or_else(|| gsm7::segments(&sms.body) as i32),
                    sid: created.sid,
                },
                Err(e) => SmsOutcome::Ambiguous {
                    reason: format!("unreadable answer {status}: {e}"),
                },
            };
        }
        let detail = serde_json::from_str::<ErrorAnswer>(&body)
            .map(|e| {
                format!(
                    "{} {}",
                    e.code.map(|c| c.to_string()).unwrap_or_default(),
                    e.message.unwrap_or_default()
                )
            })
            .unwrap_or_else(|_| body.chars().take(200).collect());
        let reason = format!("HTTP {status}: {}", detail.trim());
        if status.as_u16() == 429 {
            SmsOutcome::RetryLater { reason }
        } else if status.is_server_error() {
            SmsOutcome::Ambiguous { reason }
        } else {
            SmsOutcome::Rejected { reason }
        }
    }
}

/// A message kept for the demo's `/dev/outbox` page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DevMessage {
    pub at: DateTime<Utc>,
    /// `sms` or `email`.
    pub channel: &'static str,
    pub to: String,
    pub subject: Option<String>,
    pub body: String,
}

/// The last messages sent through the console transports (development and demo only).
#[derive(Debug, Clone, Default)]
pub struct DevOutbox(Arc<Mutex<VecDeque<DevMessage>>>);

impl DevOutbox {
    const KEEP: usize = 200;

    pub fn push(&self, message: DevMessage) {
        let mut messages = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if messages.len() == Self::KEEP {
            messages.pop_front();
        }
        messages.push_back(message);
    }

    /// Newest first.
    pub fn messages(&self) -> Vec<DevMessage> {
        let messages = self.0.lock().unwrap_or_else(|e| e.into_inner());
        messages.iter().rev().cloned().collect()
    }
}

/// Keeps the SMS in the development outbox and logs it with the number masked — and its text
/// only when `reveal` (demo mode): outside the demo, texts carry real codes and links.
pub struct ConsoleSms {
    pub outbox: DevOutbox,
    pub reveal: bool,
}

#[async_trait]
impl SmsSender for ConsoleSms {
    async fn send(&self, sms: &OutgoingSms) -> SmsOutcome {
        let body = if self.reveal {
            sms.body.as_str()
        } else {
            "(withheld)"
        };
        tracing::info!(
            to = %crate::domain::mask_phone(&sms.to),
            body,
            "SMS (console: not sent)"
        );
        self.outbox.push(DevMessage {
            at: Utc::now(),
            channel: "sms",
            to: sms.to.clone(),
            subject: None,
            body: sms.body.clone(),
        });
        SmsOutcome::Accepted {
            sid: format!("SMconsole{}", uuid::Uuid::new_v4().simple()),
            segments: gsm7::segments(&sms.body) as i32,
        }
    }
}
