//! The `hexdispatch` command: parses the CLI, loads settings, and calls one library function per
//! subcommand (`Engine` for `serve`, `tools::admin` for the rest).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hexdispatch::config::Settings;
use hexdispatch::dispatch::Role;
use hexdispatch::tools::admin;
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
    /// Create an operator account (operators are not self-registered). The password is read
    /// from HEXDISPATCH_OPERATOR_PASSWORD, or else from the first line of standard input.
    CreateOperator {
        /// Login e-mail.
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long, default_value = "operator")]
        name: String,
    },
    /// Create many drivers at once for benchmarks (no password each) and print `driver_id,token`
    /// lines.
    SeedDrivers {
        /// How many.
        #[arg(long)]
        count: u32,
        /// Their vehicle type (default: vehicles.default_type).
        #[arg(long)]
        vehicle_type: Option<String>,
        /// Token lifetime in seconds (default: auth.token_ttl_s).
        #[arg(long)]
        ttl_s: Option<u64>,
        /// Write the lines to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print a signed access token, and nothing else, on stdout.
    Token {
        /// Role of the bearer.
        #[arg(long)]
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
            let backend = actix_web::rt::System::new().block_on(admin::migrate(&settings))?;
            println!("migrations applied ({backend})");
            Ok(())
        }
        Command::CreateOperator { email, name } => {
            telemetry::init(&settings.log);
            let password = match std::env::var("HEXDISPATCH_OPERATOR_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let id = actix_web::rt::System::new()
                .block_on(admin::create_operator(&settings, &email, name, &password))?;
            println!("{id}");
            Ok(())
        }
        Command::SeedDrivers {
            count,
            vehicle_type,
            ttl_s,
            out,
        } => {
            telemetry::init(&settings.log);
            let lines = actix_web::rt::System::new().block_on(admin::seed_drivers(
                &settings,
                count,
                vehicle_type.as_deref(),
                ttl_s,
            ))?;
            match out {
                Some(path) => std::fs::write(&path, lines)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print!("{lines}"),
            }
            Ok(())
        }
        Command::Token {
            role,
            sub,
            vehicle_type,
            ttl_s,
        } => {
            let token = admin::token(&settings, role, sub, vehicle_type.as_deref(), ttl_s)?;
            println!("{token}");
            Ok(())
        }
    }
}
