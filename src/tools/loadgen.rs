//! `hexdispatch loadgen`: drives a running engine — local or remote — over its public HTTP and
//! WebSocket API, like real apps, and reports throughput, HDR-histogram latencies and errors by
//! kind (SPEC §12).
//!
//! Scenarios in this release:
//! - `search`: steady `GET /api/locations/nearby` at `--rate` requests per second from
//!   `--concurrency` keep-alive clients, around points uniform in the city;
//! - `spike`: the same, with the rate at `--spike-factor` × `--rate` during the middle third;
//! - `locations`: `--drivers` driver sockets, each sending a position every `--interval-ms`
//!   (latency is the time to write the frame; the engine answers none);
//! - `trips`: `--drivers` driver sockets that accept every offer, arrive, start with the rider's
//!   PIN and complete; riders request `--rate` trips per second (each a new rider), read the PIN
//!   once a driver is assigned and hand it over. Latency is request → TRIP_COMPLETED; a trip that
//!   ends unmatched counts as `no_driver_found`;
//! - `baseline`: `GET /health` exactly as `search` asks nearby — the trivial route a nearby
//!   figure is compared with.
//!
//! Tokens are signed with the engine's key (`auth.jwt_secret` from the same config/env), or read
//! from a `seed-drivers` output file (`--tokens`). Thresholds such as `p99_ms<20` or
//! `errors<1` make the run fail (non-zero exit) when missed.

use std::collections::BTreeMap;
use std::sync::Arc;
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
            "baseline" => Ok(Self::Baseline),
            other => Err(format!(
                "unknown scenario {other:?}: search, spike, locations, trips or baseline (mixed is \
                 not in this release)"
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
            Self::Baseline => "baseline",
        }
    }
}

/// A condition on the report: `p50_ms`, `p95_ms`, `p99_ms`, `max_ms`, `errors` or `rps`,
/// compared with `<` or `>` to a number.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
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
        let metric = metric.trim().to_owned();
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
            metric,
            below,
            value,
        })
    }
}

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct Options {
    /// The scenario.
    pub scenario: Scenario,
    /// The engine, `http://HOST:PORT`.
    pub url: String,
    /// How long to run.
    pub duration: Duration,
    /// Requests per second (search, spike).
    pub rate: u32,
    /// Keep-alive clients (search, spike).
    pub concurrency: usize,
    /// Multiple of the rate during the spike.
    pub spike_factor: u32,
    /// Driver sockets (locations).
    pub drivers: usize,
    /// Time between two positions of one driver (locations).
    pub interval: Duration,
    /// Search radius, metres.
    pub radius_m: u32,
    /// Centre of the city, and its half-width in km.
    pub city: (f64, f64, f64),
    /// `driver_id,token` lines from `seed-drivers` (locations); else tokens are signed here.
    pub tokens: Option<Vec<(Uuid, String)>>,
    /// Conditions that set the exit code.
    pub thresholds: Vec<Threshold>,
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

/// What a run measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// The scenario.
    pub scenario: &'static str,
    /// The engine.
    pub url: String,
    /// Seconds run.
    pub duration_s: f64,
    /// Requests (or frames) completed.
    pub completed: u64,
    /// Completed per second.
    pub rps: f64,
    /// Latency of the completed ones.
    pub latency: Latency,
    /// Failures by kind (`status_503`, `connect`, `timeout`, …).
    pub errors: BTreeMap<String, u64>,
    /// Per second, for the chart.
    pub timeline: Vec<Second>,
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

struct Tally {
    all: Histogram<u64>,
    seconds: Vec<(u64, Histogram<u64>)>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            all: histogram(),
            seconds: Vec::new(),
            errors: BTreeMap::new(),
        }
    }

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

    fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
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
    let tally = Arc::new(std::sync::Mutex::new(Tally::new()));
    let started = Instant::now();
    match options.scenario {
        Scenario::Search | Scenario::Spike | Scenario::Baseline => {
            search(&options, &keys, &tally, started).await?;
        }
        Scenario::Locations => locations(&options, &keys, &tally, started).await?,
        Scenario::Trips => trips(&options, &keys, &tally, started).await?,
    }
    let elapsed = started.elapsed().as_secs_f64().max(0.001);
    let tally = tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let completed = tally.all.len();
    let latency = Latency {
        p50_ms: ms(&tally.all, 0.5),
        p95_ms: ms(&tally.all, 0.95),
        p99_ms: ms(&tally.all, 0.99),
        max_ms: tally.all.max() as f64 / 1_000.0,
    };
    let rps = completed as f64 / elapsed;
    let errors: u64 = tally.errors.values().sum();
    let thresholds = options
        .thresholds
        .iter()
        .map(|t| {
            let actual = match t.metric.as_str() {
                "p50_ms" => latency.p50_ms,
                "p95_ms" => latency.p95_ms,
                "p99_ms" => latency.p99_ms,
                "max_ms" => latency.max_ms,
                "errors" => errors as f64,
                _ => rps,
            };
            let ok = if t.below {
                actual < t.value
            } else {
                actual > t.value
            };
            let sign = if t.below { '<' } else { '>' };
            (
                format!("{}{sign}{} (was {actual:.3})", t.metric, t.value),
                ok,
            )
        })
        .collect();
    Ok(Report {
        scenario: options.scenario.name(),
        url: options.url.clone(),
        duration_s: elapsed,
        completed,
        rps,
        latency,
        errors: tally.errors.clone(),
        timeline: tally
            .seconds
            .iter()
            .map(|(t, h)| Second {
                t: *t,
                done: h.len(),
                p99_ms: ms(h, 0.99),
            })
            .collect(),
        thresholds,
    })
}

async fn search(
    options: &Options,
    keys: &JwtKeys,
    tally: &Arc<std::sync::Mutex<Tally>>,
    started: Instant,
) -> anyhow::Result<()> {
    let token = keys.issue(Uuid::now_v7(), Role::Rider, None, 3_600)?;
    let workers = options.concurrency.max(1);
    let mut handles = Vec::with_capacity(workers);
    for w in 0..workers {
        let options = options.clone();
        let token = token.clone();
        let tally = Arc::clone(tally);
        handles.push(actix_rt::spawn(async move {
            let client = awc::Client::builder()
                .timeout(Duration::from_secs(10))
                .finish();
            let mut seed = seed_for(w as u64);
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
                let (lat, lng) = somewhere(options.city, &mut seed);
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
                    Err(awc::error::SendRequestError::Timeout) => Err("timeout".to_owned()),
                    Err(awc::error::SendRequestError::Connect(_)) => Err("connect".to_owned()),
                    Err(_) => Err("request".to_owned()),
                };
                let second = begun.duration_since(started).as_secs();
                let mut tally = tally
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match result {
                    Ok(took) => tally.ok(second, took),
                    Err(kind) => tally.error(kind),
                }
            }
        }));
    }
    for handle in handles {
        let _ = handle.await;
    }
    Ok(())
}

async fn locations(
    options: &Options,
    keys: &JwtKeys,
    tally: &Arc<std::sync::Mutex<Tally>>,
    started: Instant,
) -> anyhow::Result<()> {
    use futures_util::SinkExt as _;

    let drivers: Vec<(Uuid, String)> = match &options.tokens {
        Some(tokens) => tokens.iter().take(options.drivers).cloned().collect(),
        None => (0..options.drivers)
            .map(|_| {
                let id = Uuid::now_v7();
                keys.issue(id, Role::Driver, None, 3_600).map(|t| (id, t))
            })
            .collect::<Result<_, _>>()?,
    };
    let ws_url = options.url.replacen("http://", "ws://", 1);
    let mut handles = Vec::with_capacity(drivers.len());
    for (n, (_, token)) in drivers.into_iter().enumerate() {
        let options = options.clone();
        let tally = Arc::clone(tally);
        let url = format!("{ws_url}/ws/driver");
        handles.push(actix_rt::spawn(async move {
            let client = awc::Client::builder()
                .timeout(Duration::from_secs(10))
                .finish();
            let connected = client.ws(url).bearer_auth(&token).connect().await;
            let mut framed = match connected {
                Ok((_, framed)) => framed,
                Err(_) => {
                    tally
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .error("connect".into());
                    return;
                }
            };
            let mut seed = seed_for(1 << 32 | n as u64);
            let status = r#"{"type":"status","status":"online"}"#;
            let _ = framed.send(awc::ws::Message::Text(status.into())).await;
            // Spread the drivers' first frames over one interval.
            let offset = options.interval.mul_f64((n % 1_000) as f64 / 1_000.0);
            tokio::time::sleep(offset).await;
            let mut every = tokio::time::interval(options.interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while started.elapsed() < options.duration {
                every.tick().await;
                let (lat, lng) = somewhere(options.city, &mut seed);
                let frame = format!(r#"{{"type":"location","lat":{lat:.6},"lng":{lng:.6}}}"#);
                let begun = Instant::now();
                let sent = framed.send(awc::ws::Message::Text(frame.into())).await;
                let second = begun.duration_since(started).as_secs();
                let mut tally = tally
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match sent {
                    Ok(()) => tally.ok(second, begun.elapsed()),
                    Err(_) => {
                        tally.error("send".into());
                        return;
                    }
                }
            }
            let _ = framed.send(awc::ws::Message::Close(None)).await;
        }));
    }
    for handle in handles {
        let _ = handle.await;
    }
    Ok(())
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
    tally: &Arc<std::sync::Mutex<Tally>>,
    started: Instant,
) -> anyhow::Result<()> {
    use futures_util::{SinkExt as _, StreamExt as _};

    let handover = Arc::new(Handover::default());
    let ws_url = format!("{}/ws/driver", options.url.replacen("http://", "ws://", 1));
    // Drivers first: they must be online before riders ask.
    let mut drivers = Vec::new();
    for n in 0..options.drivers {
        let token = keys.issue(Uuid::now_v7(), Role::Driver, None, 3_600)?;
        let (options, tally, handover, url) = (
            options.clone(),
            Arc::clone(tally),
            Arc::clone(&handover),
            ws_url.clone(),
        );
        drivers.push(actix_rt::spawn(async move {
            let client = awc::Client::builder()
                .timeout(Duration::from_secs(10))
                .finish();
            let Ok((_, mut ws)) = client.ws(url).bearer_auth(&token).connect().await else {
                tally
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .error("connect".into());
                return;
            };
            let mut seed = seed_for(2 << 32 | n as u64);
            let (lat, lng) = somewhere(options.city, &mut seed);
            let hello = [
                format!(r#"{{"type":"location","lat":{lat:.6},"lng":{lng:.6}}}"#),
                r#"{"type":"status","status":"online"}"#.to_owned(),
            ];
            for frame in hello {
                let _ = ws.send(awc::ws::Message::Text(frame.into())).await;
            }
            let end = started + options.duration + Duration::from_secs(20);
            while Instant::now() < end {
                let next = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
                let frame = match next {
                    Err(_) => continue,
                    Ok(Some(Ok(awc::ws::Frame::Text(bytes)))) => bytes,
                    Ok(Some(Ok(awc::ws::Frame::Ping(p)))) => {
                        let _ = ws.send(awc::ws::Message::Pong(p)).await;
                        continue;
                    }
                    Ok(Some(Ok(_))) => continue,
                    Ok(_) => return,
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
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .error("no_pin".into());
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
                            let second = at.duration_since(started).as_secs();
                            tally
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .ok(second, at.elapsed());
                        }
                    }
                    _ => {}
                }
            }
            let _ = ws.send(awc::ws::Message::Close(None)).await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Riders.
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let rate = f64::from(options.rate.max(1));
    let mut riders = Vec::new();
    let mut seed = seed_for(3 << 32);
    let mut sent = 0_u64;
    while started.elapsed() < options.duration {
        let due = started + Duration::from_secs_f64(sent as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
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
            let asked = Instant::now();
            let created = client
                .post(format!("{url}/api/trips"))
                .bearer_auth(&token)
                .send_json(&body)
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
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .error(format!("status_{}", res.status().as_u16()));
                    return;
                }
                Err(_) => None,
            };
            let Some(trip) = trip else {
                tally
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .error("request".into());
                return;
            };
            handover.requested.insert(trip, asked);
            // A rider app polls its trip (the rider socket would push it; polling keeps the
            // generator simple) until a driver is assigned and the PIN shows.
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Ok(mut res) = client
                    .get(format!("{url}/api/trips/{trip}"))
                    .bearer_auth(&token)
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
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .error("no_driver_found".into());
                    return;
                }
            }
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
        let mut tally = tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for _ in 0..unfinished {
            tally.error("unfinished".into());
        }
    }
    for driver in drivers {
        driver.abort();
    }
    Ok(())
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
