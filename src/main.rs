//! The `hexdispatch` command: parses the CLI, loads settings, and calls one library function per
//! subcommand (`Engine` for `serve`, `tools::admin` for the rest).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hexdispatch::config::Settings;
use hexdispatch::dispatch::Role;
use hexdispatch::tools::{admin, loadgen, simulate};
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
    /// Drive a running engine over HTTP and WebSockets and report throughput, latency and errors
    /// (scenarios: search, spike, locations, trips, mixed, baseline). Exits non-zero when a
    /// --threshold is missed.
    Loadgen {
        /// search | spike | locations | trips | mixed | baseline.
        scenario: loadgen::Scenario,
        /// The engine, http://HOST:PORT.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        duration_s: f64,
        /// Searches per second (search, spike, baseline, mixed).
        #[arg(long, default_value_t = 1_000)]
        rate: u32,
        /// Trips requested per second (trips, mixed).
        #[arg(long, default_value_t = 2.0)]
        trip_rate: f64,
        /// Keep-alive HTTP clients (search, spike, baseline, mixed).
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        /// Multiple of --rate during the middle third (spike).
        #[arg(long, default_value_t = 3)]
        spike_factor: u32,
        /// Driver sockets (locations, trips, mixed).
        #[arg(long, default_value_t = 1_000)]
        drivers: usize,
        /// Milliseconds between two positions of one driver (locations, trips, mixed).
        #[arg(long, default_value_t = 4_000)]
        interval_ms: u64,
        /// Drivers to put online over REST before the run (a position each, then online).
        #[arg(long, default_value_t = 0)]
        online: usize,
        /// Frame → index probes per second (locations, mixed); 0 for none.
        #[arg(long, default_value_t = 10)]
        probe_rate: u32,
        /// Local addresses to spread client connections over, e.g. 127.0.0.1,127.0.0.2.
        #[arg(long, value_delimiter = ',')]
        sources: Vec<std::net::IpAddr>,
        /// Write driver_id,lat,lng of the --online drivers here.
        #[arg(long)]
        positions_out: Option<PathBuf>,
        /// Search radius, metres.
        #[arg(long, default_value_t = 2_000)]
        radius: u32,
        /// The city: centre latitude, longitude and half-width in km.
        #[arg(long, default_value = "52.52,13.405,15")]
        city: String,
        /// Driver tokens from `hexdispatch seed-drivers` (driver_id,token lines).
        #[arg(long)]
        tokens: Option<PathBuf>,
        /// Write the JSON report here (and an SVG chart beside it).
        #[arg(long)]
        out: Option<PathBuf>,
        /// A condition such as p99_ms<20, errors<1 or rps>1000 (repeatable).
        #[arg(long = "threshold")]
        thresholds: Vec<loadgen::Threshold>,
    },
    /// Run the matching policy on a simulated city with a simulated clock and print the JSON
    /// of SPEC §12 (pickup distances, waits, share matched); deterministic by seed.
    Simulate {
        #[command(flatten)]
        options: simulate::Options,
        /// Also write one CSV line per request to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Ask a running engine's /health (for container health checks: exit 0 when it answers 200).
    Healthcheck {
        /// The engine's health URL.
        #[arg(long, default_value = "http://127.0.0.1:8080/health")]
        url: String,
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

/// With the `mimalloc` feature: the engine allocates and frees small blocks on many threads at
/// once (answers built on one worker, frames passed between actors); mimalloc's per-thread heaps
/// keep that off a shared lock, for more memory (docs/PERFORMANCE.md has both figures).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            let traces = telemetry::init_with_traces(&settings.log, &settings.telemetry)
                .context("could not start the trace exporter (telemetry.otlp_endpoint)")?;
            let served = actix_web::rt::System::new().block_on(async move {
                let engine = Engine::start(settings)
                    .await
                    .context("could not start the engine")?;
                engine
                    .run_until_signalled()
                    .await
                    .context("the server failed")
            });
            traces.shutdown();
            served
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
        Command::Loadgen {
            scenario,
            url,
            duration_s,
            rate,
            trip_rate,
            concurrency,
            spike_factor,
            drivers,
            interval_ms,
            online,
            probe_rate,
            sources,
            positions_out,
            radius,
            city,
            tokens,
            out,
            thresholds,
        } => {
            telemetry::init(&settings.log);
            let parts: Vec<f64> = city
                .split(',')
                .map(|p| p.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .context("--city is lat,lng,half_width_km")?;
            let [lat, lng, half_km] = parts[..] else {
                anyhow::bail!("--city is lat,lng,half_width_km");
            };
            let tokens = match tokens {
                Some(path) => Some(
                    loadgen::read_tokens(
                        &std::fs::read_to_string(&path)
                            .with_context(|| format!("cannot read {}", path.display()))?,
                    )
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                ),
                None => None,
            };
            anyhow::ensure!(
                duration_s.is_finite() && duration_s > 0.0 && duration_s <= 86_400.0,
                "--duration-s must be within (0, 86400]"
            );
            anyhow::ensure!(
                trip_rate.is_finite() && trip_rate > 0.0,
                "--trip-rate must be a positive number"
            );
            let options = loadgen::Options {
                scenario,
                url: url.trim_end_matches('/').to_owned(),
                duration: std::time::Duration::from_secs_f64(duration_s),
                rate,
                trip_rate,
                concurrency,
                spike_factor,
                drivers,
                interval: std::time::Duration::from_millis(interval_ms.max(1)),
                online,
                probe_rate,
                radius_m: radius,
                city: (lat, lng, half_km),
                tokens,
                sources,
                positions_out,
                thresholds,
            };
            let report = actix_web::rt::System::new().block_on(loadgen::run(&settings, options))?;
            let json = serde_json::to_string_pretty(&report)?;
            println!("{json}");
            if let Some(path) = out {
                std::fs::write(&path, &json)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                let svg = path.with_extension("svg");
                std::fs::write(&svg, report.svg())
                    .with_context(|| format!("cannot write {}", svg.display()))?;
            }
            anyhow::ensure!(report.passed(), "a threshold was missed");
            Ok(())
        }
        Command::Simulate { options, out } => {
            settings.validate()?;
            let (report, rows) = simulate::run(&settings, &options)?;
            if let Some(path) = out {
                let file = std::fs::File::create(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                simulate::write_csv(&rows, std::io::BufWriter::new(file))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Healthcheck { url } => {
            let status = actix_web::rt::System::new().block_on(async {
                awc::Client::builder()
                    .timeout(std::time::Duration::from_secs(3))
                    .finish()
                    .get(&url)
                    .send()
                    .await
                    .map(|r| r.status())
            });
            match status {
                Ok(status) if status.is_success() => Ok(()),
                Ok(status) => anyhow::bail!("{url} answered {status}"),
                Err(e) => anyhow::bail!("{url}: {e}"),
            }
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
