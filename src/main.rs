//! The `hexdispatch` command: parses the CLI, loads settings, runs the chosen subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hexdispatch::auth::{JwtKeys, Role};
use hexdispatch::config::Settings;
use hexdispatch::dispatch::VehicleType;
use hexdispatch::persistence::Store;
use hexdispatch::{Engine, telemetry};
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "hexdispatch",
    version,
    about = "Real-time ride-hailing dispatch engine"
)]
struct Cli {
    /// Settings file (default: ./config.toml when present, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine (the default).
    Serve {
        /// Listen address (overrides http.host).
        #[arg(long)]
        host: Option<String>,
        /// Listen port (overrides http.port).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Apply the database migrations not applied yet, then exit.
    Migrate,
    /// Print a signed access token, and nothing else, on stdout.
    Token {
        /// Role of the bearer.
        #[arg(long, value_enum)]
        role: Role,
        /// User id (a UUID).
        #[arg(long)]
        sub: Uuid,
        /// Vehicle type of a driver that has no profile yet.
        #[arg(long)]
        vehicle_type: Option<String>,
        /// Lifetime in seconds (default: auth.token_ttl_s).
        #[arg(long)]
        ttl_s: Option<u64>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hexdispatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut settings = Settings::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve {
        host: None,
        port: None,
    }) {
        Command::Serve { host, port } => {
            if let Some(host) = host {
                settings.http.host = host;
            }
            if let Some(port) = port {
                settings.http.port = port;
            }
            settings.validate()?;
            telemetry::init(&settings.log);
            actix_web::rt::System::new().block_on(async move {
                let engine = Engine::start(settings)
                    .await
                    .context("could not start the engine")?;
                engine
                    .run_until_signalled()
                    .await
                    .context("the server failed")
            })
        }
        Command::Migrate => {
            telemetry::init(&settings.log);
            actix_web::rt::System::new().block_on(async move {
                let store = Store::connect(settings.database.url.as_deref())
                    .await
                    .context("could not connect to the database")?;
                store.migrate().await.context("migrations failed")?;
                println!("migrations applied ({})", store.backend().as_str());
                Ok(())
            })
        }
        Command::Token {
            role,
            sub,
            vehicle_type,
            ttl_s,
        } => {
            let vehicle_type = vehicle_type
                .map(|v| VehicleType::parse(&v).map(|v| v.to_string()))
                .transpose()?;
            let keys = JwtKeys::new(&settings.auth.jwt_secret);
            let token = keys.issue(
                sub,
                role,
                vehicle_type,
                ttl_s.unwrap_or(settings.auth.token_ttl_s),
            )?;
            println!("{token}");
            Ok(())
        }
    }
}
