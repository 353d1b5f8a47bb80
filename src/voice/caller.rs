//! `guichet call`: a telephone call from a terminal. It posts the same signed webhooks as the
//! voice provider to a running guichet, prints what would be spoken, reads keys (or, when the
//! menu listens for speech, what the caller says) from the terminal, and shows the SMS the
//! caller's phone receives (read from `/dev/outbox.json`, so in demo mode).
//!
//! Typed lines: digits and `*`/`#` are keys; an empty line is silence; `raccrocher` (or the
//! end of input) hangs up.

use super::signature;
use super::twiml::read_voice_response;
use anyhow::{Context, bail};
use std::io::{BufRead, Write};

/// Where to call and how to sign.
pub struct CallSettings {
    /// The running guichet (`http://127.0.0.1:8080`).
    pub base_url: String,
    /// The public URL guichet checks signatures against.
    pub public_url: String,
    pub auth_token: String,
    pub to: String,
    pub from: String,
}

/// The auth token demo mode checks signatures with when none is configured (and that
/// `guichet call` signs with): demo webhooks still go through the real check.
pub const DEMO_AUTH_TOKEN: &str = "guichet-demo";

#[derive(serde::Deserialize)]
struct DevMessage {
    channel: String,
    to: String,
    body: String,
}

/// Places the call; returns the estimated seconds of speech heard (150 words a minute).
pub async fn call(
    settings: &CallSettings,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> anyhow::Result<f64> {
    crate::install_crypto_provider();
    let http = reqwest::Client::builder().build().context("HTTP client")?;
    let sid = format!(
        "CA{}",
        rand::random::<[u8; 16]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let base = settings.base_url.trim_end_matches('/');
    let public = settings.public_url.trim_end_matches('/');
    let post = |path: String, params: Vec<(String, String)>| {
        let http = http.clone();
        let url = format!("{public}{path}");
        let signature = signature::sign(&settings.auth_token, &url, &params);
        let target = format!("{base}{path}");
        async move {
            let response = http
                .post(&target)
                .header("X-Twilio-Signature", signature)
                .form(&params)
                .send()
                .await
                .with_context(|| format!("cannot reach {target}"))?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            if !status.is_success() {
                bail!("{target} answered {status}: {body}");
            }
            Ok::<String, anyhow::Error>(body)
        }
    };
    let common = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut params = vec![
            ("CallSid".to_owned(), sid.clone()),
            ("AccountSid".to_owned(), "ACguichetcall".to_owned()),
            ("From".to_owned(), settings.from.clone()),
            ("To".to_owned(), settings.to.clone()),
            ("Direction".to_owned(), "inbound".to_owned()),
            ("CallStatus".to_owned(), "in-progress".to_owned()),
        ];
        params.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        params
    };
    let mut seen_sms = sms_to(&http, base, &settings.from).await.len();
    writeln!(
        out,
        "Appel de {} vers {} ({sid})",
        settings.from, settings.to
    )?;
    let mut twiml = post("/twilio/voice".into(), common(&[("CallStatus", "ringing")])).await?;
    let mut seconds = 0.0;
    loop {
        let answer = read_voice_response(&twiml).map_err(anyhow::Error::msg)?;
        for said in &answer.says {
            seconds += crate::domain::spoken::spoken_seconds(said, 150.0);
            writeln!(out, "  « {said} »")?;
        }
        // The outbox sends a moment after the step: wait a little for what it sends.
        let mut sms = sms_to(&http, base, &settings.from).await;
        for _ in 0..10 {
            if sms.len() > seen_sms {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            sms = sms_to(&http, base, &settings.from).await;
        }
        for message in sms.iter().skip(seen_sms) {
            writeln!(out, "  [SMS reçu] {message}")?;
        }
        seen_sms = sms.len();
        if let Some((number, action)) = &answer.dial {
            writeln!(
                out,
                "  (transfert vers le standard, {number} ; Entrée pour finir)"
            )?;
            let mut line = String::new();
            input.read_line(&mut line)?;
            twiml = post(action.clone(), common(&[("DialCallStatus", "completed")])).await?;
            continue;
        }
        if answer.hangup || answer.action.is_none() {
            writeln!(out, "  (fin de l'appel)")?;
            break;
        }
        write!(
            out,
            "{} ",
            if answer.speech { "parole>" } else { "touches>" }
        )?;
        out.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 || line.trim() == "raccrocher" {
            writeln!(out, "\n  (vous raccrochez)")?;
            break;
        }
        let line = line.trim();
        twiml = match (line.is_empty(), answer.speech) {
            (true, _) => {
                let redirect = answer.redirect.clone().unwrap_or_default();
                post(redirect, common(&[])).await?
            }
            (false, true) => {
                let action = answer.action.clone().unwrap_or_default();
                post(
                    action,
                    common(&[("SpeechResult", line), ("Confidence", "0.9")]),
                )
                .await?
            }
            (false, false) => {
                let action = answer.action.clone().unwrap_or_default();
                let digits: String = line.chars().filter(|c| !c.is_whitespace()).collect();
                post(action, common(&[("Digits", &digits)])).await?
            }
        };
    }
    post(
        "/twilio/voice/status".into(),
        common(&[("CallStatus", "completed")]),
    )
    .await?;
    writeln!(
        out,
        "Durée de parole estimée : {seconds:.0} secondes (150 mots par minute)."
    )?;
    Ok(seconds)
}

/// The SMS the development outbox holds for `to`, oldest first (empty outside demo mode).
async fn sms_to(http: &reqwest::Client, base: &str, to: &str) -> Vec<String> {
    let Ok(response) = http.get(format!("{base}/dev/outbox.json")).send().await else {
        return Vec::new();
    };
    let messages: Vec<DevMessage> = response.json().await.unwrap_or_default();
    messages
        .into_iter()
        .rev()
        .filter(|m| m.channel == "sms" && m.to == to)
        .map(|m| m.body)
        .collect()
}
