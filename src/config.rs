//! Configuration: a TOML file (`--config`, or `guichet.toml` when present) overridden by
//! environment variables with the names SPEC.md fixes (`GUICHET_DATABASE_URL`, `TWILIO_AUTH_TOKEN`,
//! …). Secrets are `SecretString`s and the database URL's password is masked, so printing the
//! configuration (`{:?}`, logs) never leaks them.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `postgres://…` selects PostgreSQL; anything else is an SQLite file.
    pub database_url: String,
    pub listen: SocketAddr,
    /// The external base URL, used in links and to check webhook signatures.
    pub public_url: String,
    /// `text` (default) or `json` logs.
    pub log_format: LogFormat,
    /// How long a chosen slot is held while the citizen confirms.
    pub hold_minutes: u32,
    /// How long a replacement offered by the commune (after it cancelled) stays held.
    pub proposal_hold_hours: u32,
    pub twilio_account_sid: Option<String>,
    pub twilio_auth_token: Option<SecretString>,
    pub twilio_api_base: String,
    pub twilio_from: Option<String>,
    pub twilio_messaging_service_sid: Option<String>,
    /// Seconds to wait for the SMS provider before the send counts as ambiguous.
    pub twilio_timeout_seconds: u64,
    /// Development only: accept webhooks without a valid `X-Twilio-Signature`.
    pub twilio_skip_signature: bool,
    /// May carry a password (`smtp://user:pass@host`).
    pub smtp_url: Option<SecretString>,
    pub mail_from: Option<String>,
    /// Keys the hashes of one-time codes. When absent, a random key is created once and kept
    /// in the database, shared by every instance.
    pub secret_key: Option<SecretString>,
    /// What one SMS segment costs, in euros (the platform's price list: 0.07).
    pub sms_price_eur: f64,
    /// Bearer token for the platform's own routes (SMS usage); without it they are closed,
    /// except in demo mode.
    pub admin_token: Option<SecretString>,
    /// Whether this instance sends notifications (every instance may: claims never collide).
    pub outbox_worker: bool,
    /// Slots one address (IP) may hold per hour, on the web and through the API; 0: no limit.
    pub holds_per_ip_per_hour: u32,
    /// Codes and links one address may have sent per hour; 0: no limit. Each destination has
    /// its own limit besides, kept in the database (three in ten minutes).
    pub codes_per_ip_per_hour: u32,
    /// Behind a reverse proxy: the client's address is the last one of `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
    /// A directory whose `voice-flows/*.toml` and `prompts/*.toml` add to or replace the
    /// compiled-in call flow and spoken texts.
    pub voice_dir: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://guichet.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl Default for Config {
    fn default() -> Self {
        let listen: SocketAddr = DEFAULT_LISTEN.parse().expect("a valid default address");
        Self {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            listen,
            // Empty: derived from `listen` once the configuration is read.
            public_url: String::new(),
            log_format: LogFormat::Text,
            hold_minutes: 10,
            proposal_hold_hours: 48,
            twilio_account_sid: None,
            twilio_auth_token: None,
            twilio_api_base: "https://api.twilio.com".to_owned(),
            twilio_from: None,
            twilio_messaging_service_sid: None,
            twilio_timeout_seconds: 10,
            twilio_skip_signature: false,
            smtp_url: None,
            mail_from: None,
            secret_key: None,
            sms_price_eur: 0.07,
            admin_token: None,
            outbox_worker: true,
            // A family, a school secretary or a town-hall counter's public Wi-Fi share one
            // address: generous, but a script cannot drain the SMS budget.
            holds_per_ip_per_hour: 60,
            codes_per_ip_per_hour: 30,
            trust_forwarded_for: false,
            voice_dir: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Reads `file` (if given it must exist; if not given, `guichet.toml` is read when present),
    /// then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::raw())
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        match file {
            Some(path) if !path.exists() => {
                return Err(ConfigError(format!("file {} not found", path.display())));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new("guichet.toml").exists() => {
                figment = figment.merge(Toml::file_exact("guichet.toml"));
            }
            None => {}
        }
        let guichet = env.clone().filter_map(|k| {
            k.as_str()
                .strip_prefix("GUICHET_")
                .filter(|rest| KNOWN.contains(&rest.to_ascii_lowercase().as_str()))
                .map(|rest| rest.to_ascii_lowercase().into())
        });
        let twilio = env.filter_map(|k| {
            let key = k.as_str().to_ascii_lowercase();
            (key.starts_with("twilio_") && KNOWN.contains(&key.as_str())).then(|| key.into())
        });
        let mut config: Config = figment
            .merge(guichet)
            .merge(twilio)
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
        config.public_url = if config.public_url.is_empty() {
            format!("http://{}", config.listen)
        } else {
            config.public_url.trim_end_matches('/').to_owned()
        };
        if !(0.0..1000.0).contains(&config.sms_price_eur) {
            return Err(ConfigError("sms_price_eur must be a price in euros".into()));
        }
        if config.proposal_hold_hours == 0 {
            return Err(ConfigError("proposal_hold_hours must be at least 1".into()));
        }
        if config.hold_minutes == 0 {
            return Err(ConfigError("hold_minutes must be at least 1".into()));
        }
        Ok(config)
    }

    /// The price of one SMS segment in millionths of a euro.
    pub fn sms_price_micro_eur(&self) -> i64 {
        (self.sms_price_eur * 1_000_000.0).round() as i64
    }

    pub fn hold_duration(&self) -> chrono::Duration {
        chrono::Duration::minutes(i64::from(self.hold_minutes))
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://")
    }
}

/// Keys a file or the environment may set; other `GUICHET_*` variables (a test's own, say) are
/// not configuration.
const KNOWN: &[&str] = &[
    "database_url",
    "listen",
    "public_url",
    "log_format",
    "hold_minutes",
    "proposal_hold_hours",
    "twilio_account_sid",
    "twilio_auth_token",
    "twilio_api_base",
    "twilio_from",
    "twilio_messaging_service_sid",
    "twilio_timeout_seconds",
    "twilio_skip_signature",
    "smtp_url",
    "mail_from",
    "secret_key",
    "sms_price_eur",
    "admin_token",
    "outbox_worker",
    "holds_per_ip_per_hour",
    "codes_per_ip_per_hour",
    "trust_forwarded_for",
    "voice_dir",
];

/// `postgres://guichet:s3cret@db/guichet` → `postgres://guichet:***@db/guichet`; a
/// `password=` query parameter is masked too.
pub fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<SecretString>| s.as_ref().map(|_| "[REDACTED]");
        f.debug_struct("Config")
            .field("database_url", &mask_url_password(&self.database_url))
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("log_format", &self.log_format)
            .field("hold_minutes", &self.hold_minutes)
            .field("proposal_hold_hours", &self.proposal_hold_hours)
            .field("twilio_account_sid", &self.twilio_account_sid)
            .field("twilio_auth_token", &secret(&self.twilio_auth_token))
            .field("twilio_api_base", &self.twilio_api_base)
            .field("twilio_from", &self.twilio_from)
            .field(
                "twilio_messaging_service_sid",
                &self.twilio_messaging_service_sid,
            )
            .field(
                "smtp_url",
                &self
                    .smtp_url
                    .as_ref()
                    .map(|u| mask_url_password(u.expose_secret())),
            )
            .field("mail_from", &self.mail_from)
            .field("twilio_timeout_seconds", &self.twilio_timeout_seconds)
            .field("twilio_skip_signature", &self.twilio_skip_signature)
            .field("secret_key", &secret(&self.secret_key))
            .field("sms_price_eur", &self.sms_price_eur)
            .field("admin_token", &secret(&self.admin_token))
            .field("outbox_worker", &self.outbox_worker)
            .field("holds_per_ip_per_hour", &self.holds_per_ip_per_hour)
            .field("codes_per_ip_per_hour", &self.codes_per_ip_per_hour)
            .field("trust_forwarded_for", &self.trust_forwarded_for)
            .field("voice_dir", &self.voice_dir)
            .finish()
    }
}

#[cfg(test)]
// figment::Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn file_then_environment() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "guichet.toml",
                r#"
                    listen = "0.0.0.0:9000"
                    public_url = "https://rdv.example.fr/"
                    hold_minutes = 15
                "#,
            )?;
            jail.set_env(
                "GUICHET_DATABASE_URL",
                "postgres://guichet:s3cret@db:5432/guichet",
            );
            jail.set_env("GUICHET_LISTEN", "127.0.0.1:7000");
            jail.set_env("TWILIO_AUTH_TOKEN", "tok-123");
            jail.set_env("GUICHET_SECRET_KEY", "key-456");
            jail.set_env("GUICHET_SMS_PRICE_EUR", "0.065");
            jail.set_env("TWILIO_ACCOUNT_SID", "AC123");
            jail.set_env("GUICHET_TEST_SOMETHING", "ignored");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.listen.to_string(), "127.0.0.1:7000");
            assert_eq!(config.public_url, "https://rdv.example.fr");
            assert_eq!(config.hold_minutes, 15);
            assert!(config.is_postgres());
            assert_eq!(config.twilio_account_sid.as_deref(), Some("AC123"));
            let printed = format!("{config:?}");
            assert!(!printed.contains("s3cret"), "{printed}");
            assert!(!printed.contains("tok-123"), "{printed}");
            assert!(!printed.contains("key-456"), "{printed}");
            assert_eq!(config.sms_price_micro_eur(), 65_000);
            assert!(printed.contains("postgres://guichet:***@db:5432/guichet"));
            Ok(())
        });
    }

    #[test]
    fn defaults_and_errors() {
        Jail::expect_with(|_| {
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.database_url, DEFAULT_DATABASE_URL);
            assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
            assert_eq!(config.public_url, "http://127.0.0.1:8080");
            assert!(Config::load(Some(Path::new("absent.toml"))).is_err());
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("GUICHET_LISTEN", "0.0.0.0:9090");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                config.public_url, "http://0.0.0.0:9090",
                "links follow the address"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("GUICHET_LISTEN", "not an address");
            assert!(Config::load(None).is_err());
            Ok(())
        });
    }

    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_url_password("smtp://user:pw@mail.example.fr:587"),
            "smtp://user:***@mail.example.fr:587"
        );
        assert_eq!(
            mask_url_password("sqlite://guichet.db"),
            "sqlite://guichet.db"
        );
        assert_eq!(
            mask_url_password("postgres://u@h/db?sslmode=require&password=x"),
            "postgres://u@h/db?sslmode=require&password=***"
        );
    }
}
