//! `hexdispatch loadgen`: drives a running engine — local or remote — over its public HTTP and
//! WebSocket API, like real apps, and reports throughput, HDR-histogram latencies and errors by
//! kind (SPEC §12).
//!
//! Scenarios:
//! - `search`: steady `GET /api/locations/nearby` at `--rate` requests per second from
//!   `--concurrency` keep-alive clients, around points uniform in the city;
//! - `spike`: the same, with the rate at `--spike-factor` × `--rate` during the middle third;
//! - `locations`: `--drivers` driver sockets, each sending a position every `--interval-ms`
//!   while it drives on (latency is the time to write the frame; the engine answers none), and
//!   a probe measuring frame → index: a probe driver jumps to a new point and a client asks
//!   nearby there until the driver shows (`--probe-rate` times a second);
//! - `trips`: `--drivers` driver sockets that stream positions, accept every offer, arrive,
//!   start with the rider's PIN and complete; riders request `--trip-rate` trips per second
//!   (each a new rider), read the PIN once a driver is assigned and hand it over. Latency is
//!   request → TRIP_COMPLETED; a trip that ends unmatched counts as `no_driver_found`;
//! - `mixed`: a city at once — the `trips` drivers and riders, the `search` clients at
//!   `--rate`, and the frame → index probe, each reported as a part;
//! - `baseline`: `GET /health` exactly as `search` asks nearby — the trivial route a nearby
//!   figure is compared with.
//!
//! `--online N` first puts N drivers online over REST (a position, then `online`, each sent to
//! the instance owning the driver's region), so that
//! searches have a city to find. Tokens are signed with the engine's key (`auth.jwt_secret` from
//! the same config/env), or read from a `seed-drivers` output file (`--tokens`). Client sockets
//! are spread over `--sources` (local addresses such as 127.0.0.2, for more than one address's
//! worth of ports). Counters of the engine's `/metrics` (location updates applied and dropped)
//! are read before and after, so a run against a dedicated engine shows what was lost.
//! Thresholds such as `p99_ms<20`, `errors<1` or, per part, `trips.p99_ms<2000` make the run
//! fail (non-zero exit) when missed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use uuid::Uuid;

use crate::config::Settings;
use crate::dispatch::Role;
use crate::http::tokens::JwtKeys;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Steady nearby queries.
    Search,
    /// Nearby queries with a burst in the middle third.
    Spike,
    /// Driver sockets streaming positions.
    Locations,
    /// Drivers answering offers and riders' trips run to completion with the PIN.
    Trips,
    /// Trips, searches and the frame → index probe at once.
    Mixed,
    /// `GET /health` the way `search` asks nearby: the trivial route, for comparison.
    Baseline,
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "search" => Ok(Self::Search),
            "spike" => Ok(Self::Spike),
            "locations" => Ok(Self::Locations),
            "trips" => Ok(Self::Trips),
            "mixed" => Ok(Self::Mixed),
            "baseline" => Ok(Self::Baseline),
            other => Err(format!(
                "unknown scenario {other:?}: search, spike, locations, trips, mixed or baseline"
            )),
        }
    }
}

impl Scenario {
    const fn name(self) -> &'static str {
        match self {
            Self::Search => "search",
            Self::Spike => "spike",
            Self::Locations => "locations",
            Self::Trips => "trips",
            Self::Mixed => "mixed",
            Self::Baseline => "baseline",
        }
    }
}

/// A condition on the report: `p50_ms`, `p95_ms`, `p99_ms`, `max_ms`, `errors` or `rps`,
/// compared with `<` or `>` to a number; prefixed by a part (`trips.p99_ms<2000`) it applies to
/// that part of a run, else to the run's main figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    part: Option<String>,
    metric: String,
    below: bool,
    value: f64,
}

impl std::str::FromStr for Threshold {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let (metric, below, value) = if let Some((m, v)) = raw.split_once('<') {
            (m, true, v)
        } else if let Some((m, v)) = raw.split_once('>') {
            (m, false, v)
        } else {
            return Err(format!(
                "threshold {raw:?}: write e.g. p99_ms<20 or rps>1000"
            ));
        };
        let (part, metric) = match metric.trim().split_once('.') {
            Some((part, metric)) => {
                if !PARTS.contains(&part) {
                    return Err(format!(
                        "threshold {raw:?}: the part is one of {}",
                        PARTS.join(", ")
                    ));
                }
                (Some(part.to_owned()), metric.to_owned())
            }
            None => (None, metric.trim().to_owned()),
        };
        if !["p50_ms", "p95_ms", "p99_ms", "max_ms", "errors", "rps"].contains(&metric.as_str()) {
            return Err(format!(
                "threshold {raw:?}: the metric is one of p50_ms, p95_ms, p99_ms, max_ms, errors, rps"
            ));
        }
        let value = value
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("threshold {raw:?}: {value:?} is not a number"))?;
        Ok(Self {
            part,
            metric,
            below,
            value,
        })
    }
}

/// The parts a run may have, each with its own figures.
const PARTS: [&str; 5] = ["search", "locations", "frame_to_index", "trips", "baseline"];

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct Options {
    /// The scenario.
    pub scenario: Scenario,
    /// The engine, `http://HOST:PORT`.
    pub url: String,
    /// How long to run.
    pub duration: Duration,
    /// Searches per second (search, spike, baseline, mixed).
    pub rate: u32,
    /// Trips requested per second (trips, mixed).
    pub trip_rate: f64,
    /// Keep-alive clients (search, spike, baseline, mixed).
    pub concurrency: usize,
    /// Multiple of the rate during the spike.
    pub spike_factor: u32,
    /// Driver sockets (locations, trips, mixed).
    pub drivers: usize,
    /// Time between two positions of one driver (locations, trips, mixed).
    pub interval: Duration,
    /// Drivers put online over REST before the run starts.
    pub online: usize,
    /// Frame → index probes per second (locations, mixed); 0 for none.
    pub probe_rate: u32,
    /// Search radius, metres.
    pub radius_m: u32,
    /// Centre of the city, and its half-width in km.
    pub city: (f64, f64, f64),
    /// `driver_id,token` lines from `seed-drivers` (locations, `--online`); else tokens are
    /// signed here.
    pub tokens: Option<Vec<(Uuid, String)>>,
    /// Local addresses client connections are spread over; empty for the system's choice.
    pub sources: Vec<IpAddr>,
    /// Where to write `driver_id,lat,lng` of the drivers `online` put online (for peers
    /// measured on the same drivers).
    pub positions_out: Option<std::path::PathBuf>,
    /// Conditions that set the exit code.
    pub thresholds: Vec<Threshold>,
}

impl Options {
    /// A short, light run of `scenario` against `url`: 10 s, 1 000 searches/s from 50 clients,
    /// 1 000 drivers streaming every 4 s, 2 trips/s, 10 probes/s, a 30 × 30 km Berlin.
    #[must_use]
    pub fn new(scenario: Scenario, url: impl Into<String>) -> Self {
        Self {
            scenario,
            url: url.into(),
            duration: Duration::from_secs(10),
            rate: 1_000,
            trip_rate: 2.0,
            concurrency: 50,
            spike_factor: 3,
            drivers: 1_000,
            interval: Duration::from_secs(4),
            online: 0,
            probe_rate: 10,
            radius_m: 2_000,
            city: (52.52, 13.405, 15.0),
            tokens: None,
            sources: Vec::new(),
            positions_out: None,
            thresholds: Vec::new(),
        }
    }

    /// An HTTP client for connection `n`: its source address is the `n`th of `--sources`, in
    /// turn.
    fn client(&self, n: usize) -> awc::Client {
        let builder = awc::Client::builder().timeout(Duration::from_secs(10));
        match self.sources.get(n % self.sources.len().max(1)) {
            Some(source) => builder.local_address(*source).finish(),
            None => builder.finish(),
        }
    }
}

/// Latencies, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// One second of the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Second {
    /// Seconds since the start.
    pub t: u64,
    /// Requests (or frames) completed in it.
    pub done: u64,
    /// Their p99, ms.
    pub p99_ms: f64,
}

/// The figures of one part of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Part {
    /// Requests (frames, trips, probes) completed.
    pub completed: u64,
    /// Completed per second.
    pub rps: f64,
    /// Latency of the completed ones.
    pub latency: Latency,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Per second, for the chart.
    pub timeline: Vec<Second>,
}

/// Counters of the engine's `/metrics`, after the run minus before.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EngineCounters {
    /// `hexdispatch_location_updates_total`: positions accepted (socket and REST).
    pub location_updates: u64,
    /// `hexdispatch_location_updates_dropped_total`: positions dropped (rate limit, full
    /// mailbox).
    pub location_updates_dropped: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// The scenario.
    pub scenario: &'static str,
    /// The engine.
    pub url: String,
    /// Seconds run.
    pub duration_s: f64,
    /// Requests (or frames) completed, of the main part (search for `mixed`).
    pub completed: u64,
    /// Completed per second.
    pub rps: f64,
    /// Latency of the completed ones.
    pub latency: Latency,
    /// Failures by kind (`status_503`, `connect`, `timeout`, …), of every part.
    pub errors: BTreeMap<String, u64>,
    /// Per second, for the chart.
    pub timeline: Vec<Second>,
    /// Every part of the run by name (`search`, `locations`, `frame_to_index`, `trips`).
    pub parts: BTreeMap<String, Part>,
    /// What the engine counted meanwhile, when its `/metrics` answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineCounters>,
    /// Each threshold, and whether it held.
    pub thresholds: Vec<(String, bool)>,
}

impl Report {
    /// Whether every threshold held.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.thresholds.iter().all(|(_, ok)| *ok)
    }

    /// An SVG chart of throughput (bars) and p99 latency (line) over time.
    #[must_use]
    pub fn svg(&self) -> String {
        let (w, h, pad) = (800.0, 300.0, 40.0);
        let n = self.timeline.len().max(1) as f64;
        let max_done = self
            .timeline
            .iter()
            .map(|s| s.done)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let max_p99 = self
            .timeline
            .iter()
            .map(|s| s.p99_ms)
            .fold(0.0_f64, f64::max)
            .max(0.001);
        let bar = (w - 2.0 * pad) / n;
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n\
             <text x=\"{pad}\" y=\"20\">{} — completed per second (bars, max {max_done:.0}) and \
             p99 ms (line, max {max_p99:.2})</text>\n",
            self.scenario
        );
        let mut line = String::new();
        for (i, s) in self.timeline.iter().enumerate() {
            let x = pad + i as f64 * bar;
            let bh = (h - 2.0 * pad) * s.done as f64 / max_done;
            out.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#9ecae1\"/>\n",
                h - pad - bh,
                (bar - 1.0).max(1.0)
            ));
            let y = h - pad - (h - 2.0 * pad) * s.p99_ms / max_p99;
            line.push_str(&format!("{:.1},{y:.1} ", x + bar / 2.0));
        }
        out.push_str(&format!(
            "<polyline points=\"{line}\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\"/>\n</svg>\n"
        ));
        out
    }
}

/// Reads `driver_id,token` lines as written by `hexdispatch seed-drivers`.
///
/// # Errors
///
/// A line that is not `uuid,token`.
pub fn read_tokens(text: &str) -> Result<Vec<(Uuid, String)>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let (id, token) = line
                .split_once(',')
                .ok_or_else(|| format!("line {}: expected driver_id,token", i + 1))?;
            let id = Uuid::parse_str(id.trim())
                .map_err(|e| format!("line {}: driver_id: {e}", i + 1))?;
            Ok((id, token.trim().to_owned()))
        })
        .collect()
}

type Shared = Arc<Mutex<Tally>>;

struct Tally {
    all: Histogram<u64>,
    seconds: Vec<(u64, Histogram<u64>)>,
    errors: BTreeMap<String, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            all: histogram(),
            seconds: Vec::new(),
            errors: BTreeMap::new(),
        }
    }
}

impl Tally {
    fn ok(&mut self, second: u64, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self.all.record(us);
        let i = usize::try_from(second).unwrap_or(usize::MAX);
        while self.seconds.len() <= i {
            let t = self.seconds.len() as u64;
            self.seconds.push((t, histogram()));
        }
        if let Some((_, h)) = self.seconds.get_mut(i) {
            let _ = h.record(us);
        }
    }

    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    fn part(&self, elapsed_s: f64) -> Part {
        Part {
            completed: self.all.len(),
            rps: self.all.len() as f64 / elapsed_s.max(0.001),
            latency: Latency {
                p50_ms: ms(&self.all, 0.5),
                p95_ms: ms(&self.all, 0.95),
                p99_ms: ms(&self.all, 0.99),
                max_ms: self.all.max() as f64 / 1_000.0,
            },
            errors: self.errors.clone(),
            timeline: self
                .seconds
                .iter()
                .map(|(t, h)| Second {
                    t: *t,
                    done: h.len(),
                    p99_ms: ms(h, 0.99),
                })
                .collect(),
        }
    }
}

/// Records one outcome.
fn note(tally: &Shared, started: Instant, begun: Instant, outcome: Result<Duration, String>) {
    let second = begun.duration_since(started).as_secs();
    let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
    match outcome {
        Ok(took) => tally.ok(second, took),
        Err(kind) => tally.error(kind),
    }
}

/// Microseconds from 1 µs to 60 s, three significant figures.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1_000.0
    }
}

/// A well-spread starting state for stream `n` (splitmix64): neighbouring `n` give unrelated
/// streams, so the points of different drivers and workers do not cluster.
fn seed_for(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}

/// A point uniform in the city.
fn somewhere(city: (f64, f64, f64), seed: &mut u64) -> (f64, f64) {
    // xorshift: cheap and deterministic; the load needs spread, not statistics.
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 11) as f64 / (1_u64 << 53) as f64 * 2.0 - 1.0
    };
    let half_lat = city.2 / 111.2;
    let half_lng = city.2 / (111.2 * city.0.to_radians().cos().max(0.01));
    (city.0 + next() * half_lat, city.1 + next() * half_lng)
}

/// The points `search` client `worker` asks about, in order. Tools that must ask the same
/// questions of something else (examples/peers.rs asks Redis and PostGIS) use this stream.
pub fn search_points(city: (f64, f64, f64), worker: usize) -> impl Iterator<Item = (f64, f64)> {
    let mut seed = seed_for(worker as u64);
    std::iter::repeat_with(move || somewhere(city, &mut seed))
}

/// Runs a scenario and returns its report. Must run inside an actix system.
///
/// # Errors
///
/// A URL that is not `http://…`, or tokens that cannot be signed.
pub async fn run(settings: &Settings, options: Options) -> anyhow::Result<Report> {
    anyhow::ensure!(
        options.url.starts_with("http://"),
        "--url must be http://HOST:PORT (TLS is left to a proxy in front of the engine)"
    );
    let keys = JwtKeys::new(&settings.auth.jwt_secret);
    if options.online > 0 {
        put_online(&options, &keys).await?;
    }
    let before = engine_counters(&options).await;
    let started = Instant::now();
    let probe_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Driver sockets that have tried to connect: the probe starts once all have.
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let main_part = match options.scenario {
        Scenario::Search | Scenario::Spike => "search",
        Scenario::Baseline => "baseline",
        Scenario::Locations => "locations",
        Scenario::Trips => "trips",
        Scenario::Mixed => "search",
    };
    let mut tallies: BTreeMap<&'static str, Shared> = BTreeMap::new();
    let mut tally = |name: &'static str| Arc::clone(tallies.entry(name).or_default());
    match options.scenario {
        Scenario::Search | Scenario::Spike | Scenario::Baseline => {
            search(&options, &keys, &tally(main_part), started).await?;
        }
        Scenario::Locations => {
            let probe = probe(
                &options,
                &keys,
                tally("frame_to_index"),
                &probe_stop,
                &ready,
            );
            locations(&options, &keys, &tally("locations"), &ready, started).await?;
            probe_stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = probe.await;
        }
        Scenario::Trips => {
            trips(
                &options,
                &keys,
                &tally("trips"),
                &tally("locations"),
                &ready,
                started,
            )
            .await?;
        }
        Scenario::Mixed => {
            let probe = probe(
                &options,
                &keys,
                tally("frame_to_index"),
                &probe_stop,
                &ready,
            );
            let (searches, trips_tally, frames) =
                (tally("search"), tally("trips"), tally("locations"));
            let (searched, tripped) = futures_util::join!(
                search(&options, &keys, &searches, started),
                trips(&options, &keys, &trips_tally, &frames, &ready, started),
            );
            searched?;
            tripped?;
            probe_stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = probe.await;
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(0.001);
    // Frames still in flight reach the counters within a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let engine = match (before, engine_counters(&options).await) {
        (Some(before), Some(after)) => Some(EngineCounters {
            location_updates: after
                .location_updates
                .saturating_sub(before.location_updates),
            location_updates_dropped: after
                .location_updates_dropped
                .saturating_sub(before.location_updates_dropped),
        }),
        _ => None,
    };
    let parts: BTreeMap<String, Part> = tallies
        .iter()
        .map(|(name, t)| {
            let t = t.lock().unwrap_or_else(PoisonError::into_inner);
            ((*name).to_owned(), t.part(elapsed))
        })
        .collect();
    let main = parts
        .get(main_part)
        .cloned()
        .unwrap_or_else(|| Tally::default().part(elapsed));
    let mut errors = BTreeMap::new();
    for part in parts.values() {
        for (kind, n) in &part.errors {
            *errors.entry(kind.clone()).or_insert(0) += n;
        }
    }
    let thresholds = options
        .thresholds
        .iter()
        .map(|t| {
            let (figures, errors) = match &t.part {
                None => (&main, errors.values().sum::<u64>()),
                Some(name) => match parts.get(name) {
                    Some(part) => (part, part.errors.values().sum()),
                    None => {
                        return (
                            format!("{}.{}: no such part in this run", name, t.metric),
                            false,
                        );
                    }
                },
            };
            let actual = match t.metric.as_str() {
                "p50_ms" => figures.latency.p50_ms,
                "p95_ms" => figures.latency.p95_ms,
                "p99_ms" => figures.latency.p99_ms,
                "max_ms" => figures.latency.max_ms,
                "errors" => errors as f64,
                _ => figures.rps,
            };
            let ok = if t.below {
                actual < t.value
            } else {
                actual > t.value
            };
            let sign = if t.below { '<' } else { '>' };
            let name = t
                .part
                .as_ref()
                .map_or_else(String::new, |p| format!("{p}."));
            (
                format!("{name}{}{sign}{} (was {actual:.3})", t.metric, t.value),
                ok,
            )
        })
        .collect();
    Ok(Report {
        scenario: options.scenario.name(),
        url: options.url.clone(),
        duration_s: elapsed,
        completed: main.completed,
        rps: main.rps,
        latency: main.latency.clone(),
        errors,
        timeline: main.timeline.clone(),
        parts,
        engine,
        thresholds,
    })
}

/// Puts `--online` drivers online over REST, `--concurrency` at a time: a position uniform in
/// the city, then `online`.
async fn put_online(options: &Options, keys: &JwtKeys) -> anyhow::Result<()> {
    let drivers = driver_tokens(options, keys, options.online)?;
    let drivers = Arc::new(drivers);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..options.concurrency.max(1))
        .map(|w| {
            let (drivers, next, failed) =
                (Arc::clone(&drivers), Arc::clone(&next), Arc::clone(&failed));
            let client = options.client(w);
            let (url, city) = (options.url.clone(), options.city);
            actix_rt::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((id, token)) = drivers.get(i) else {
                        return;
                    };
                    let (lat, lng) = online_position(city, i);
                    // A driver's calls go to the instance owning its region (several instances
                    // sharing a map, SPEC §11); on one instance that is the instance itself.
                    let url = owner_url(&client, &url, lat, lng).await;
                    let at = client
                        .put(format!("{url}/api/drivers/{id}/location"))
                        .bearer_auth(token)
                        .send_json(&serde_json::json!({"lat": lat, "lng": lng}))
                        .await;
                    let on = client
                        .put(format!("{url}/api/drivers/{id}/status"))
                        .bearer_auth(token)
                        .send_json(&serde_json::json!({"status": "online"}))
                        .await;
                    let ok = |r: &Result<awc::ClientResponse<_>, _>| {
                        r.as_ref().is_ok_and(|r| r.status().is_success())
                    };
                    if !ok(&at) || !ok(&on) {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    if let Some(path) = &options.positions_out {
        let mut lines = String::with_capacity(drivers.len() * 60);
        for (i, (id, _)) in drivers.iter().enumerate() {
            let (lat, lng) = online_position(options.city, i);
            lines.push_str(&format!("{id},{lat:.7},{lng:.7}\n"));
        }
        std::fs::write(path, lines)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} drivers could not be put online",
        drivers.len()
    );
    Ok(())
}

/// The base URL of the instance owning the region of (`lat`, `lng`), from `GET
/// /api/cluster/owner` of the engine at `url`; `url` itself when it cannot tell.
async fn owner_url(client: &awc::Client, url: &str, lat: f64, lng: f64) -> String {
    let answer = async {
        let mut res = client
            .get(format!("{url}/api/cluster/owner?lat={lat}&lng={lng}"))
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = res.json().await.ok()?;
        body["url"].as_str().map(str::to_owned)
    }
    .await;
    answer.unwrap_or_else(|| url.to_owned())
}

/// The driver socket URL for a driver at `at`: that of the instance owning its region, or
/// `fallback` (the socket of the engine at `url`) when that is the engine itself.
async fn driver_socket_url(
    client: &awc::Client,
    url: &str,
    at: (f64, f64),
    fallback: String,
) -> String {
    match owner_url(client, url, at.0, at.1).await {
        owner if owner != url => format!("{}/ws/driver", owner.replacen("http://", "ws://", 1)),
        _ => fallback,
    }
}

/// Where `--online` puts driver `i`.
fn online_position(city: (f64, f64, f64), i: usize) -> (f64, f64) {
    somewhere(city, &mut seed_for(4 << 32 | i as u64))
}

/// Sums the samples of `name` (any labels) in a Prometheus text page.
fn metric_sum(page: &str, name: &str) -> u64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

async fn engine_counters(options: &Options) -> Option<EngineCounters> {
    let mut res = options
        .client(0)
        .get(format!("{}/metrics", options.url))
        .send()
        .await
        .ok()?;
    if !res.status().is_success() {
        return None;
    }
    let body = res.body().limit(16 << 20).await.ok()?;
    let page = std::str::from_utf8(&body).ok()?;
    Some(EngineCounters {
        location_updates: metric_sum(page, crate::metrics::LOCATION_UPDATES),
        location_updates_dropped: metric_sum(page, crate::metrics::LOCATION_UPDATES_DROPPED),
    })
}

async fn search(
    options: &Options,
    keys: &JwtKeys,
    tally: &Shared,
    started: Instant,
) -> anyhow::Result<()> {
    let token = keys.issue(Uuid::now_v7(), Role::Rider, None, 24 * 3_600)?;
    let workers = options.concurrency.max(1);
    let mut handles = Vec::with_capacity(workers);
    for w in 0..workers {
        let options = options.clone();
        let token = token.clone();
        let tally = Arc::clone(tally);
        handles.push(actix_rt::spawn(async move {
            let client = options.client(w);
            let mut points = search_points(options.city, w);
            // Open loop: each request has its due time, one interval (at the rate in force then)
            // after the previous one, whether or not earlier answers are back.
            let mut due = started;
            let end = started + options.duration;
            while due < end && Instant::now() < end {
                let t = due.duration_since(started).as_secs_f64() / options.duration.as_secs_f64();
                let factor =
                    if options.scenario == Scenario::Spike && (1.0 / 3.0..2.0 / 3.0).contains(&t) {
                        f64::from(options.spike_factor.max(1))
                    } else {
                        1.0
                    };
                let rate = f64::from(options.rate.max(1)) * factor / workers as f64;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
                due += Duration::from_secs_f64(1.0 / rate);
                let Some((lat, lng)) = points.next() else {
                    break;
                };
                let url = if options.scenario == Scenario::Baseline {
                    format!("{}/health", options.url)
                } else {
                    format!(
                        "{}/api/locations/nearby?lat={lat:.6}&lng={lng:.6}&radius={}&limit=5",
                        options.url, options.radius_m
                    )
                };
                let begun = Instant::now();
                let outcome = client.get(url).bearer_auth(&token).send().await;
                let result = match outcome {
                    Ok(mut res) if res.status().is_success() => match res.body().await {
                        Ok(_) => Ok(begun.elapsed()),
                        Err(_) => Err("body".to_owned()),
                    },
                    Ok(res) => Err(format!("status_{}", res.status().as_u16())),
                    Err(e) => Err(request_error(&e).to_owned()),
                };
                note(&tally, started, begun, result);
            }
        }));
    }
    for handle in handles {
        let _ = handle.await;
    }
    Ok(())
}

fn request_error(e: &awc::error::SendRequestError) -> &'static str {
    match e {
        awc::error::SendRequestError::Timeout => "timeout",
        awc::error::SendRequestError::Connect(_) => "connect",
        _ => "request",
    }
}

/// Tokens for `n` drivers: from `--tokens`, else signed here.
fn driver_tokens(
    options: &Options,
    keys: &JwtKeys,
    n: usize,
) -> anyhow::Result<Vec<(Uuid, String)>> {
    Ok(match &options.tokens {
        Some(tokens) => tokens.iter().take(n).cloned().collect(),
        None => (0..n)
            .map(|_| {
                let id = Uuid::now_v7();
                keys.issue(id, Role::Driver, None, 24 * 3_600)
                    .map(|t| (id, t))
            })
            .collect::<Result<_, _>>()?,
    })
}

/// One step of a driver driving on: up to `metres` in a random direction, kept in the city.
fn drive_on(at: (f64, f64), metres: f64, city: (f64, f64, f64), seed: &mut u64) -> (f64, f64) {
    let (dlat, dlng) = somewhere((0.0, 0.0, 1.0), seed);
    // `somewhere` around (0, 0) with a 1 km half-width: a vector of up to ~1.4 km.
    let scale = metres / 1_000.0;
    let lat = (at.0 + dlat * scale).clamp(city.0 - city.2 / 111.2, city.0 + city.2 / 111.2);
    let half_lng = city.2 / (111.2 * city.0.to_radians().cos().max(0.01));
    let lng = (at.1 + dlng * scale / city.0.to_radians().cos().max(0.01))
        .clamp(city.1 - half_lng, city.1 + half_lng);
    (lat, lng)
}

/// City speed for streamed positions, m/s.
const CITY_SPEED_MPS: f64 = 10.0;

async fn locations(
    options: &Options,
    keys: &JwtKeys,
    tally: &Shared,
    ready: &Arc<std::sync::atomic::AtomicUsize>,
    started: Instant,
) -> anyhow::Result<()> {
    use futures_util::{SinkExt as _, StreamExt as _};

    let drivers = driver_tokens(options, keys, options.drivers)?;
    let ws_url = options.url.replacen("http://", "ws://", 1);
    let mut handles = Vec::with_capacity(drivers.len());
    for (n, (_, token)) in drivers.into_iter().enumerate() {
        let options = options.clone();
        let (tally, ready) = (Arc::clone(tally), Arc::clone(ready));
        let url = format!("{ws_url}/ws/driver");
        handles.push(actix_rt::spawn(async move {
            let mut seed = seed_for(1 << 32 | n as u64);
            let mut at = somewhere(options.city, &mut seed);
            let client = options.client(n);
            let url = driver_socket_url(&client, &options.url, at, url).await;
            let connected = client.ws(url).bearer_auth(&token).connect().await;
            ready.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut framed = match connected {
                Ok((_, framed)) => framed,
                Err(_) => {
                    tally
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .error("connect");
                    return;
                }
            };
            let step_m = CITY_SPEED_MPS * options.interval.as_secs_f64();
            let status = r#"{"type":"status","status":"online"}"#;
            let _ = framed.send(awc::ws::Message::Text(status.into())).await;
            // Spread the drivers' first frames over one interval.
            let offset = options.interval.mul_f64((n % 1_000) as f64 / 1_000.0);
            tokio::time::sleep(offset).await;
            let mut every = tokio::time::interval(options.interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let end = tokio::time::Instant::from_std(started + options.duration);
            loop {
                // Read what the engine sends (answering its pings) while waiting for the next
                // position: a client that never reads resets the connection when it closes,
                // which can discard its last frames unread.
                tokio::select! {
                    _ = every.tick() => {}
                    () = tokio::time::sleep_until(end) => break,
                    incoming = framed.next() => {
                        match incoming {
                            Some(Ok(awc::ws::Frame::Ping(p))) => {
                                let _ = framed.send(awc::ws::Message::Pong(p)).await;
                            }
                            Some(Ok(awc::ws::Frame::Text(bytes))) => {
                                // Several instances: the driver drove into another's region and
                                // goes on there, as an app would.
                                let moved = serde_json::from_slice::<serde_json::Value>(&bytes)
                                    .ok()
                                    .filter(|v| v["type"] == "moved")
                                    .and_then(|v| v["url"].as_str().map(str::to_owned));
                                if let Some(url) = moved {
                                    match client.ws(url).bearer_auth(&token).connect().await {
                                        Ok((_, fresh)) => framed = fresh,
                                        Err(_) => {
                                            note(&tally, started, Instant::now(), Err("reconnect".to_owned()));
                                            return;
                                        }
                                    }
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => {
                                note(&tally, started, Instant::now(), Err("closed_by_engine".to_owned()));
                                return;
                            }
                        }
                        continue;
                    }
                }
                at = drive_on(at, step_m, options.city, &mut seed);
                let frame = format!(r#"{{"type":"location","lat":{:.6},"lng":{:.6}}}"#, at.0, at.1);
                let begun = Instant::now();
                let sent = framed.send(awc::ws::Message::Text(frame.into())).await;
                let failed = sent.is_err();
                note(&tally, started, begun, sent.map(|()| begun.elapsed()).map_err(|_| "send".to_owned()));
                if failed {
                    return;
                }
            }
            // The closing handshake: ours, then the engine's, then the connection ends.
            let _ = framed.send(awc::ws::Message::Close(None)).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(frame)) = framed.next().await {
                    if matches!(frame, awc::ws::Frame::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }));
    }
    for handle in handles {
        let _ = handle.await;
    }
    Ok(())
}

/// Frame → index, from outside: probe drivers (each at most 5 positions a second, under the
/// engine's per-driver limit) jump to a fresh point, and a client asks nearby there, back to
/// back, until the driver shows. Offers a probe driver gets are declined at once.
fn probe(
    options: &Options,
    keys: &JwtKeys,
    tally: Shared,
    stop: &Arc<std::sync::atomic::AtomicBool>,
    ready: &Arc<std::sync::atomic::AtomicUsize>,
) -> actix_rt::task::JoinHandle<()> {
    use futures_util::{SinkExt as _, StreamExt as _};

    let (options, stop, ready) = (options.clone(), Arc::clone(stop), Arc::clone(ready));
    let rider = keys.issue(Uuid::now_v7(), Role::Rider, None, 24 * 3_600);
    let drivers: Result<Vec<(Uuid, String)>, _> = (0..options.probe_rate.div_ceil(5).max(1))
        .map(|_| {
            let id = Uuid::now_v7();
            keys.issue(id, Role::Driver, None, 24 * 3_600)
                .map(|t| (id, t))
        })
        .collect();
    actix_rt::spawn(async move {
        let (Ok(rider), Ok(drivers)) = (rider, drivers) else {
            return;
        };
        if options.probe_rate == 0 {
            return;
        }
        // Measure the steady state, not the connection storm of the first seconds.
        let waiting = Instant::now();
        while ready.load(std::sync::atomic::Ordering::Relaxed) < options.drivers
            && waiting.elapsed() < Duration::from_secs(60)
            && !stop.load(std::sync::atomic::Ordering::Relaxed)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let started = Instant::now();
        let client = options.client(usize::MAX / 2);
        let ws_url = format!("{}/ws/driver", options.url.replacen("http://", "ws://", 1));
        let mut sinks = Vec::new();
        let (declines, mut to_decline) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
        for (k, (_, token)) in drivers.iter().enumerate() {
            let Ok((_, framed)) = client.ws(ws_url.clone()).bearer_auth(token).connect().await
            else {
                tally
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .error("connect");
                return;
            };
            let (mut sink, mut stream) = framed.split();
            let online = r#"{"type":"status","status":"online"}"#;
            let _ = sink.send(awc::ws::Message::Text(online.into())).await;
            sinks.push(sink);
            let declines = declines.clone();
            actix_rt::spawn(async move {
                while let Some(Ok(frame)) = stream.next().await {
                    if let awc::ws::Frame::Text(bytes) = frame
                        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
                        && v["type"] == "offer"
                        && let Some(trip) = v["trip_id"].as_str()
                    {
                        let _ = declines.send((k, trip.to_owned()));
                    }
                }
            });
        }
        let mut seed = seed_for(5 << 32);
        let mut every =
            tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(options.probe_rate)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Vec<(f64, f64)> = vec![(f64::NAN, f64::NAN); drivers.len()];
        let mut i = 0_usize;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            every.tick().await;
            while let Ok((k, trip)) = to_decline.try_recv() {
                let decline = format!(r#"{{"type":"decline","trip_id":"{trip}"}}"#);
                if let Some(sink) = sinks.get_mut(k) {
                    let _ = sink.send(awc::ws::Message::Text(decline.into())).await;
                }
            }
            let k = i % drivers.len();
            i += 1;
            // A point well away from where this driver was, so only the new position can match.
            let mut to = somewhere(options.city, &mut seed);
            while (to.0 - last[k].0).abs() < 0.01 && (to.1 - last[k].1).abs() < 0.01 {
                to = somewhere(options.city, &mut seed);
            }
            last[k] = to;
            let id = drivers[k].0.to_string();
            let frame = format!(
                r#"{{"type":"location","lat":{:.6},"lng":{:.6}}}"#,
                to.0, to.1
            );
            let begun = Instant::now();
            if sinks[k]
                .send(awc::ws::Message::Text(frame.into()))
                .await
                .is_err()
            {
                note(&tally, started, begun, Err("send".into()));
                return;
            }
            let url = format!(
                "{}/api/locations/nearby?lat={:.6}&lng={:.6}&radius=50&limit=20",
                options.url, to.0, to.1
            );
            let outcome = loop {
                if begun.elapsed() > Duration::from_secs(5) {
                    break Err("probe_timeout".to_owned());
                }
                match client.get(url.clone()).bearer_auth(&rider).send().await {
                    Ok(mut res) if res.status().is_success() => match res.body().await {
                        Ok(body) if std::str::from_utf8(&body).is_ok_and(|b| b.contains(&id)) => {
                            break Ok(begun.elapsed());
                        }
                        Ok(_) => {}
                        Err(_) => break Err("body".to_owned()),
                    },
                    Ok(res) => break Err(format!("status_{}", res.status().as_u16())),
                    Err(e) => break Err(request_error(&e).to_owned()),
                }
            };
            note(&tally, started, begun, outcome);
        }
    })
}

/// What riders tell their drivers in the `trips` scenario.
#[derive(Default)]
struct Handover {
    /// Trip → its start PIN, once the rider read it.
    pins: dashmap::DashMap<Uuid, String>,
    /// Trip → when it was requested.
    requested: dashmap::DashMap<Uuid, Instant>,
}

async fn trips(
    options: &Options,
    keys: &JwtKeys,
    tally: &Shared,
    frames: &Shared,
    ready: &Arc<std::sync::atomic::AtomicUsize>,
    started: Instant,
) -> anyhow::Result<()> {
    let handover = Arc::new(Handover::default());
    let ws_url = format!("{}/ws/driver", options.url.replacen("http://", "ws://", 1));
    // Drivers first: they must be online before riders ask.
    let mut drivers = Vec::new();
    for (n, (_, token)) in driver_tokens(options, keys, options.drivers)?
        .into_iter()
        .enumerate()
    {
        let (options, tally, frames, handover, url, ready) = (
            options.clone(),
            Arc::clone(tally),
            Arc::clone(frames),
            Arc::clone(&handover),
            ws_url.clone(),
            Arc::clone(ready),
        );
        drivers.push(actix_rt::spawn(async move {
            let client = options.client(n);
            let first = somewhere(options.city, &mut seed_for(2 << 32 | n as u64));
            let url = driver_socket_url(&client, &options.url, first, url).await;
            let connected = client.ws(url).bearer_auth(&token).connect().await;
            ready.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Ok((_, ws)) = connected else {
                tally
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .error("connect");
                return;
            };
            trip_driver(ws, n, &options, &tally, &frames, &handover, started).await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Riders.
    let client = options.client(0);
    let rate = options.trip_rate.max(0.01);
    let mut riders = Vec::new();
    let mut seed = seed_for(3 << 32);
    let mut sent = 0_u64;
    while started.elapsed() < options.duration {
        let due = started + Duration::from_secs_f64(sent as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        if started.elapsed() >= options.duration {
            break;
        }
        sent += 1;
        let token = keys.issue(Uuid::now_v7(), Role::Rider, None, 3_600)?;
        let (lat, lng) = somewhere(options.city, &mut seed);
        let body = serde_json::json!({
            "origin": {"lat": lat, "lng": lng},
            "destination": {"lat": lat + 0.01, "lng": lng + 0.01},
        });
        let (client, tally, handover, url) = (
            client.clone(),
            Arc::clone(tally),
            Arc::clone(&handover),
            options.url.clone(),
        );
        riders.push(actix_rt::spawn(async move {
            rider(&client, &url, &token, &body, &tally, &handover).await;
        }));
    }
    for rider in riders {
        let _ = rider.await;
    }
    // Give the last trips time to finish, then stop the drivers.
    for _ in 0..100 {
        if handover.requested.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unfinished = handover.requested.len();
    if unfinished > 0 {
        let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
        for _ in 0..unfinished {
            tally.error("unfinished");
        }
    }
    for driver in drivers {
        driver.abort();
    }
    Ok(())
}

/// A driver app: streams its position every `--interval-ms` (counted in `frames`), accepts
/// every offer, arrives, starts with the PIN its rider hands over and completes.
async fn trip_driver<W, E>(
    mut ws: W,
    n: usize,
    options: &Options,
    tally: &Shared,
    frames: &Shared,
    handover: &Handover,
    started: Instant,
) where
    W: futures_util::Sink<awc::ws::Message>
        + futures_util::Stream<Item = Result<awc::ws::Frame, E>>
        + Unpin,
{
    use futures_util::{SinkExt as _, StreamExt as _};

    let mut seed = seed_for(2 << 32 | n as u64);
    let mut at = somewhere(options.city, &mut seed);
    let step_m = CITY_SPEED_MPS * options.interval.as_secs_f64();
    let hello = [
        format!(
            r#"{{"type":"location","lat":{:.6},"lng":{:.6}}}"#,
            at.0, at.1
        ),
        r#"{"type":"status","status":"online"}"#.to_owned(),
    ];
    for frame in hello {
        let _ = ws.send(awc::ws::Message::Text(frame.into())).await;
    }
    let mut every = tokio::time::interval_at(
        tokio::time::Instant::now() + options.interval.mul_f64((n % 1_000) as f64 / 1_000.0),
        options.interval,
    );
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = started + options.duration + Duration::from_secs(20);
    while Instant::now() < end {
        let frame = tokio::select! {
            next = ws.next() => match next {
                Some(Ok(awc::ws::Frame::Text(bytes))) => bytes,
                Some(Ok(awc::ws::Frame::Ping(p))) => {
                    let _ = ws.send(awc::ws::Message::Pong(p)).await;
                    continue;
                }
                Some(Ok(_)) => continue,
                _ => return,
            },
            _ = every.tick() => {
                if started.elapsed() < options.duration {
                    at = drive_on(at, step_m, options.city, &mut seed);
                    let frame = format!(r#"{{"type":"location","lat":{:.6},"lng":{:.6}}}"#, at.0, at.1);
                    let begun = Instant::now();
                    let sent = ws.send(awc::ws::Message::Text(frame.into())).await;
                    note(frames, started, begun, sent.map(|()| begun.elapsed()).map_err(|_| "send".to_owned()));
                }
                continue;
            }
        };
        let Ok(frame) = serde_json::from_slice::<serde_json::Value>(&frame) else {
            continue;
        };
        let trip = frame["trip_id"]
            .as_str()
            .or_else(|| frame["trip"]["trip_id"].as_str())
            .and_then(|t| Uuid::parse_str(t).ok());
        match (frame["type"].as_str(), trip) {
            (Some("offer"), Some(trip)) => {
                let accept = format!(r#"{{"type":"accept","trip_id":"{trip}"}}"#);
                let _ = ws.send(awc::ws::Message::Text(accept.into())).await;
            }
            (Some("trip_assigned"), Some(trip)) => {
                let arrived = format!(r#"{{"type":"arrived","trip_id":"{trip}"}}"#);
                let _ = ws.send(awc::ws::Message::Text(arrived.into())).await;
                // The rider reads its PIN and hands it over.
                let mut pin = None;
                for _ in 0..200 {
                    if let Some(p) = handover.pins.get(&trip) {
                        pin = Some(p.clone());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                let Some(pin) = pin else {
                    tally
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .error("no_pin");
                    continue;
                };
                for frame in [
                    format!(r#"{{"type":"start","trip_id":"{trip}","pin":"{pin}"}}"#),
                    format!(r#"{{"type":"complete","trip_id":"{trip}"}}"#),
                ] {
                    let _ = ws.send(awc::ws::Message::Text(frame.into())).await;
                }
            }
            (Some("trip_update"), Some(trip)) if frame["status"] == "TRIP_COMPLETED" => {
                if let Some((_, at)) = handover.requested.remove(&trip) {
                    note(tally, started, at, Ok(at.elapsed()));
                }
            }
            _ => {}
        }
    }
    let _ = ws.send(awc::ws::Message::Close(None)).await;
}

/// A rider app: requests a trip, polls it until the PIN shows (or it ends unmatched) and hands
/// the PIN to its driver.
async fn rider(
    client: &awc::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
    tally: &Shared,
    handover: &Handover,
) {
    let asked = Instant::now();
    let created = client
        .post(format!("{url}/api/trips"))
        .bearer_auth(token)
        .send_json(body)
        .await;
    let trip = match created {
        Ok(mut res) if res.status().as_u16() == 201 => res
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["trip_id"].as_str().and_then(|t| Uuid::parse_str(t).ok())),
        Ok(res) => {
            tally
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .error(format!("status_{}", res.status().as_u16()));
            return;
        }
        Err(_) => None,
    };
    let Some(trip) = trip else {
        tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .error("request");
        return;
    };
    handover.requested.insert(trip, asked);
    // A rider app polls its trip (the rider socket would push it; polling keeps the generator
    // simple) until a driver is assigned and the PIN shows.
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(mut res) = client
            .get(format!("{url}/api/trips/{trip}"))
            .bearer_auth(token)
            .send()
            .await
        else {
            continue;
        };
        let Ok(view) = res.json::<serde_json::Value>().await else {
            continue;
        };
        if let Some(pin) = view["start_pin"].as_str() {
            handover.pins.insert(trip, pin.to_owned());
            return;
        }
        if view["status"] == "NO_DRIVER_FOUND" || view["status"] == "CANCELLED" {
            handover.requested.remove(&trip);
            tally
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .error("no_driver_found");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_of_neighbouring_streams_spread_over_the_city() {
        let city = (52.52, 13.405, 15.0);
        let firsts: Vec<(f64, f64)> = (0..200)
            .map(|n| somewhere(city, &mut seed_for(n)))
            .collect();
        let (min_lat, max_lat) = firsts.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
        let span_km = (max_lat - min_lat) * 111.2;
        assert!(
            span_km > 20.0,
            "200 drivers' first points span only {span_km} km"
        );
        assert!(
            firsts
                .iter()
                .all(|p| (p.0 - city.0).abs() * 111.2 <= 15.0 + 1e-9)
        );
    }
}
