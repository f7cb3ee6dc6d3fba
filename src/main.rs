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
            anyhow::ensure!(
                (8..=128).contains(&password.chars().count()),
                "the password must be 8–128 characters"
            );
            let email = email.trim().to_ascii_lowercase();
            anyhow::ensure!(email.contains('@'), "--email must be an e-mail address");
            let passwords = hexdispatch::identity::Passwords::new(&settings.auth)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let hash = passwords
                .hash(&password)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            actix_web::rt::System::new().block_on(async move {
                let store = Store::connect(settings.database.url.as_deref())
                    .await
                    .context("could not connect to the database")?;
                store.migrate().await.context("migrations failed")?;
                let id = uuid::Uuid::now_v7();
                store
                    .create_user(
                        &hexdispatch::persistence::users::NewUser {
                            user_id: id,
                            role: Role::Operator,
                            name,
                            email,
                            password_hash: hash,
                            phone: None,
                            vehicle: None,
                        },
                        hexdispatch::clock::now_ms(),
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("{id}");
                Ok(())
            })
        }
        Command::SeedDrivers {
            count,
            vehicle_type,
            ttl_s,
            out,
        } => {
            telemetry::init(&settings.log);
            let vehicle = VehicleType::parse(
                vehicle_type
                    .as_deref()
                    .unwrap_or(&settings.vehicles.default_type),
            )?
            .to_string();
            let keys = JwtKeys::new(&settings.auth.jwt_secret);
            let ttl = ttl_s.unwrap_or(settings.auth.token_ttl_s);
            let drivers: Vec<(uuid::Uuid, String)> = (0..count)
                .map(|_| (uuid::Uuid::now_v7(), vehicle.clone()))
                .collect();
            let mut lines = String::with_capacity(drivers.len() * 400);
            for (id, v) in &drivers {
                let token = keys.issue(*id, Role::Driver, Some(v.clone()), ttl)?;
                lines.push_str(&format!("{id},{token}\n"));
            }
            actix_web::rt::System::new().block_on(async move {
                let store = Store::connect(settings.database.url.as_deref())
                    .await
                    .context("could not connect to the database")?;
                store.migrate().await.context("migrations failed")?;
                store
                    .create_drivers(&drivers, hexdispatch::clock::now_ms())
                    .await
                    .context("could not store the drivers")?;
                anyhow::Ok(())
            })?;
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
