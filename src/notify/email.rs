//! Sending e-mail: [`SmtpMailer`] over SMTP (lettre; `smtp://host:25`, `smtp://…?tls=required`
//! for STARTTLS, `smtps://…` for TLS, credentials in the URL), with a plain-text part, an HTML
//! part and, for confirmations, an `.ics` attachment. [`ConsoleMailer`] logs and keeps the
//! message for the demo.

use super::sms::{DevMessage, DevOutbox};
use async_trait::async_trait;
use chrono::Utc;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub ics: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailOutcome {
    Sent,
    /// A temporary failure (4xx, connection, timeout): send again later.
    RetryLater {
        reason: String,
    },
    /// Refused for good (5xx, bad address).
    Rejected {
        reason: String,
    },
}

#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, email: &OutgoingEmail) -> MailOutcome;
}

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("SMTP URL: {0}")]
    Url(#[from] lettre::transport::smtp::Error),
    #[error("sender address {0:?}: {1}")]
    From(String, lettre::address::AddressError),
}

impl SmtpMailer {
    pub fn new(smtp_url: &str, from: &str, timeout: Duration) -> Result<Self, MailerError> {
        crate::install_crypto_provider();
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)?
            .timeout(Some(timeout))
            .build();
        let from = from
            .parse()
            .map_err(|e| MailerError::From(from.to_owned(), e))?;
        Ok(Self { transport, from })
    }

    fn message(&self, email: &OutgoingEmail) -> Result<Message, String> {
        let to: Mailbox = email
            .to
            .parse()
            .map_err(|e| format!("address {}: {e}", email.to))?;
        let text = SinglePart::plain(email.text.clone());
        let body = match &email.html {
            Some(html) => MultiPart::alternative()
                .singlepart(text)
                .singlepart(SinglePart::html(html.clone())),
            None => MultiPart::alternative().singlepart(text),
        };
        let body = match &email.ics {
            Some(ics) => MultiPart::mixed().multipart(body).singlepart(
                Attachment::new("rendez-vous.ics".to_owned()).body(
                    ics.clone(),
                    ContentType::parse("text/calendar; charset=utf-8; method=PUBLISH")
                        .map_err(|e| e.to_string())?,
                ),
            ),
            None => body,
        };
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&email.subject)
            .multipart(body)
            .map_err(|e| e.to_string())
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &OutgoingEmail) -> MailOutcome {
        let message = match self.message(email) {
            Ok(m) => m,
            Err(reason) => return MailOutcome::Rejected { reason },
        };
        match self.transport.send(message).await {
            Ok(_) => MailOutcome::Sent,
            Err(e) if e.is_permanent() => MailOutcome::Rejected {
                reason: e.to_string(),
            },
            Err(e) => MailOutcome::RetryLater {
                reason: e.to_string(),
            },
        }
    }
}

/// Logs the e-mail and keeps it in the development outbox.
pub struct ConsoleMailer {
    pub outbox: DevOutbox,
}

#[async_trait]
impl Mailer for ConsoleMailer {
    async fn send(&self, email: &OutgoingEmail) -> MailOutcome {
        tracing::info!(
            to = %email.to.split('@').nth(1).map(|d| format!("***@{d}")).unwrap_or_default(),
            subject = %email.subject,
            "e-mail (console: not sent)"
        );
        self.outbox.push(DevMessage {
            at: Utc::now(),
            channel: "email",
            to: email.to.clone(),
            subject: Some(email.subject.clone()),
            body: email.text.clone(),
        });
        MailOutcome::Sent
    }
}
