//! The `guichet` command: parse, load the configuration, start. Everything else is in `lib.rs`.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use guichet::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "guichet",
    version,
    about = "Prise de rendez-vous en mairie, par téléphone et sur le web"
)]
struct Cli {
    /// TOML configuration file (default: guichet.toml when present). Environment variables
    /// (GUICHET_DATABASE_URL, GUICHET_LISTEN, …) override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Run the server on the embedded database with the demo communes (seeded on first start),
    /// SMS and e-mail to the console.
    Demo,
    /// Apply database migrations and exit.
    Migrate,
    /// Call a running guichet from the terminal, as a caller would: hear the menu, type keys
    /// (or words when asked to speak), see the SMS received.
    Call {
        /// The number called: the commune's (e.g. +33465710001 for Annecy in the demo).
        #[arg(long)]
        to: String,
        /// The caller's number.
        #[arg(long, default_value = "+33639980001")]
        from: String,
        /// The running guichet (default: http:// + the configured listen address).
        #[arg(long)]
        url: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    guichet::install_crypto_provider();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("guichet: {e}");
            return ExitCode::from(2);
        }
    };
    guichet::telemetry::init_logs(config.log_format);
    let result = match cli.command {
        Command::Serve => guichet::run_server(config, false).await,
        Command::Demo => guichet::run_server(config, true).await,
        Command::Migrate => guichet::run_migrations(&config).await,
        Command::Call { to, from, url } => {
            use secrecy::ExposeSecret;
            let settings = guichet::voice::caller::CallSettings {
                base_url: url.unwrap_or_else(|| format!("http://{}", config.listen)),
                public_url: config.public_url.clone(),
                auth_token: config.twilio_auth_token.as_ref().map_or_else(
                    || guichet::voice::caller::DEMO_AUTH_TOKEN.to_owned(),
                    |t| t.expose_secret().to_owned(),
                ),
                to,
                from,
            };
            let stdin = std::io::stdin();
            guichet::voice::caller::call(&settings, &mut stdin.lock(), &mut std::io::stdout())
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = ?e, "guichet stopped");
            eprintln!("guichet: {e:#}");
            ExitCode::FAILURE
        }
    }
}
