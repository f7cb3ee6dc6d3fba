//! `hexdispatch simulate` (SPEC §12): the engine's matching policy on a simulated city with a
//! simulated clock, so a policy can be judged over an hour of city in about a second.
//!
//! What is real: the spatial index ([`SpatialIndex`]), the search bookkeeping and its rules
//! ([`Search`], [`MatchingPolicy`] from `[matching]`: radius steps, batch size, offer timeout), and
//! the optimal pairing of a window ([`batch::optimal_sparse`]). The simulator plays the trip
//! actors' part event by event, in the order the engine does it: `greedy` is the nearest-first
//! broadcast of SPEC §6 rules 1–4, `batched` adds rule 5 (a window's requests paired with the
//! drivers in reach of them, each trip's first offer to its driver, then on as `greedy`), and
//! `sequential` offers one driver at a time, nearest first.
//!
//! What is simulated: a square city; requests arrive as a Poisson process with pickups and
//! destinations uniform over the city; drivers start uniform, answer an offer after a random
//! delay (uniform within ±50 % of `answer_s`) and accept it with `accept_probability`; an assigned
//! driver drives to the pickup and on to the destination at `speed_kmh` over a road distance of
//! [`ROAD_FACTOR`] × the straight line, and is free where it dropped off. Idle drivers do not
//! move. Pickup distances are straight lines, as the index and the pairing measure them.
//!
//! Deterministic: the same options and seed give the same report.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::io::Write;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use uuid::Uuid;

use crate::config::Settings;
use crate::dispatch::batch::{self, DEFAULT_CAP};
use crate::dispatch::{MatchingMode, MatchingPolicy, Search};
use crate::geo::{IndexedDriver, LatLng, NearbyHit, NearbyQuery, SpatialIndex};

/// Road distance over straight-line distance, for drive times.
pub const ROAD_FACTOR: f64 = 1.3;

/// Candidates a trip reads as it enlists in a window (as the engine's batcher).
const CANDIDATES_PER_TRIP: usize = crate::actors::batcher::CANDIDATES_PER_TRIP;

/// Which policy the simulated city runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Nearest first, each request on its own (SPEC §6 rules 1–4, broadcast).
    Greedy,
    /// Requests of a window paired optimally for their first offer (SPEC §6 rule 5).
    Batched,
    /// Nearest first, one offer at a time (`matching.mode = "sequential"`): tells how much of
    /// `batched`'s gain is the single nearest offer rather than the joint pairing.
    Sequential,
}

/// What to simulate (also the options of `hexdispatch simulate`).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// `greedy` (nearest first, each request on its own, offered to a batch at once), `batched`
    /// (a window's requests paired optimally) or `sequential` (nearest first, one offer at a
    /// time).
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Drivers in the city, all online for the whole run.
    #[arg(long, default_value_t = 500)]
    pub drivers: u32,
    /// Mean requests per minute (Poisson arrivals).
    #[arg(long, default_value_t = 20.0)]
    pub requests_per_min: f64,
    /// Simulated minutes of requests.
    #[arg(long, default_value_t = 60.0)]
    pub minutes: f64,
    /// Requests in the first minutes are simulated but left out of the figures (the city starts
    /// with every driver idle).
    #[arg(long, default_value_t = 0.0)]
    pub warmup_minutes: f64,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// `batched`: the window, ms (default `matching.batch_window_ms`).
    #[arg(long)]
    pub window_ms: Option<u64>,
    /// Side of the square city, km.
    #[arg(long, default_value_t = 10.0)]
    pub city_km: f64,
    /// Driving speed, km/h.
    #[arg(long, default_value_t = 25.0)]
    pub speed_kmh: f64,
    /// Chance that a driver accepts an offer.
    #[arg(long, default_value_t = 0.9)]
    pub accept_probability: f64,
    /// Mean seconds a driver takes to answer an offer.
    #[arg(long, default_value_t = 4.0)]
    pub answer_s: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mode: Mode::Greedy,
            drivers: 500,
            requests_per_min: 20.0,
            minutes: 60.0,
            warmup_minutes: 0.0,
            seed: 1,
            window_ms: None,
            city_km: 10.0,
            speed_kmh: 25.0,
            accept_probability: 0.9,
            answer_s: 4.0,
        }
    }
}

/// An option out of range.
#[derive(Debug, thiserror::Error)]
#[error("{option}: {reason}")]
pub struct OptionError {
    /// The option, as on the command line.
    pub option: &'static str,
    /// What is wrong.
    pub reason: &'static str,
}

impl Options {
    /// Checks every option's range.
    ///
    /// # Errors
    /// The first option out of range.
    pub fn validate(&self) -> Result<(), OptionError> {
        let bad = |option, reason| Err(OptionError { option, reason });
        let finite_pos = |v: f64| v.is_finite() && v > 0.0;
        if !(1..=1_000_000).contains(&self.drivers) {
            return bad("--drivers", "must be within 1..=1000000");
        }
        if !finite_pos(self.requests_per_min) || self.requests_per_min > 100_000.0 {
            return bad("--requests-per-min", "must be above 0 and at most 100000");
        }
        if !finite_pos(self.minutes) || self.minutes > 24.0 * 60.0 {
            return bad("--minutes", "must be above 0 and at most 1440");
        }
        if !self.warmup_minutes.is_finite()
            || self.warmup_minutes < 0.0
            || self.warmup_minutes >= self.minutes
        {
            return bad("--warmup-minutes", "must be at least 0 and below --minutes");
        }
        if self.window_ms.is_some_and(|w| !(1..=60_000).contains(&w)) {
            return bad("--window-ms", "must be within 1..=60000");
        }
        if !finite_pos(self.city_km) || self.city_km > 200.0 {
            return bad("--city-km", "must be above 0 and at most 200");
        }
        if !finite_pos(self.speed_kmh) || self.speed_kmh > 200.0 {
            return bad("--speed-kmh", "must be above 0 and at most 200");
        }
        if !(self.accept_probability > 0.0 && self.accept_probability <= 1.0) {
            return bad("--accept-probability", "must be above 0 and at most 1");
        }
        if !self.answer_s.is_finite() || self.answer_s < 0.0 || self.answer_s > 600.0 {
            return bad("--answer-s", "must be within 0..=600");
        }
        Ok(())
    }
}

/// The figures of one run: SPEC §12's fields first, then more of the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The policy.
    pub mode: Mode,
    /// Requests counted (after the warm-up).
    pub requests: u64,
    /// Of those, assigned a driver.
    pub matched: u64,
    /// Mean straight-line distance from the assigned driver to the pickup, metres.
    pub mean_pickup_m: f64,
    /// Its 95th percentile.
    pub p95_pickup_m: f64,
    /// Mean time from request to the driver at the pickup, seconds (matched trips).
    pub mean_wait_s: f64,
    /// Its 95th percentile.
    pub p95_wait_s: f64,
    /// `matched / requests`.
    pub share_matched: f64,
    /// Mean time from request to assignment, seconds.
    pub mean_match_s: f64,
    /// Its 95th percentile.
    pub p95_match_s: f64,
    /// Offers sent for the counted requests.
    pub offers: u64,
    /// Idle drivers and riders waiting for a driver, each averaged over the counted requests'
    /// arrivals, and their ratio.
    pub mean_idle_drivers: f64,
    /// See `mean_idle_drivers`.
    pub mean_waiting_riders: f64,
    /// `mean_idle_drivers / mean_waiting_riders` (none when no rider ever waited).
    pub idle_drivers_per_waiting_rider: Option<f64>,
    /// Mean time a matched trip kept its driver (answering, pickup and ride), seconds.
    pub mean_busy_s: f64,
    /// The run's options.
    pub drivers: u32,
    /// See `drivers`.
    pub requests_per_min: f64,
    /// See `drivers`.
    pub minutes: f64,
    /// See `drivers`.
    pub warmup_minutes: f64,
    /// See `drivers`.
    pub seed: u64,
    /// `batched`: the window, ms.
    pub window_ms: Option<u64>,
    /// Wall-clock time of the run, ms.
    pub wall_ms: u64,
}

/// One request, for `--out`.
#[derive(Debug, Clone)]
pub struct TripRow {
    /// Sequence number of the request.
    pub trip: usize,
    /// Simulated time of the request, seconds.
    pub requested_s: f64,
    /// Whether it fell in the warm-up.
    pub warmup: bool,
    /// Pickup.
    pub origin: LatLng,
    /// `matched` or `no_driver`.
    pub outcome: &'static str,
    /// Request → assignment, seconds.
    pub match_s: Option<f64>,
    /// Driver to pickup, metres.
    pub pickup_m: Option<f64>,
    /// Request → driver at the pickup, seconds.
    pub wait_s: Option<f64>,
    /// Offers the trip sent.
    pub offers: u32,
    /// Radius step it ended in.
    pub step: usize,
}

/// Writes the rows as CSV with a header line.
///
/// # Errors
/// The writer's.
pub fn write_csv(rows: &[TripRow], mut out: impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "trip,requested_s,warmup,origin_lat,origin_lng,outcome,match_s,pickup_m,wait_s,offers,step"
    )?;
    let opt = |v: Option<f64>, digits: usize| v.map_or(String::new(), |v| format!("{v:.digits$}"));
    for r in rows {
        writeln!(
            out,
            "{},{:.3},{},{:.6},{:.6},{},{},{},{},{},{}",
            r.trip,
            r.requested_s,
            r.warmup,
            r.origin.lat(),
            r.origin.lng(),
            r.outcome,
            opt(r.match_s, 3),
            opt(r.pickup_m, 0),
            opt(r.wait_s, 3),
            r.offers,
            r.step
        )?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DriverState {
    Idle,
    Offered,
    Busy,
}

struct Driver {
    id: Uuid,
    at: LatLng,
    state: DriverState,
    busy_since_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TripState {
    Matching,
    Assigned,
    NoDriver,
}

struct Trip {
    origin: LatLng,
    destination: LatLng,
    requested_ms: i64,
    search: Search,
    radius_m: f64,
    waited: bool,
    step_timer: u64,
    awaiting_batch: bool,
    candidates: Vec<NearbyHit>,
    state: TripState,
    matched_ms: Option<i64>,
    pickup_m: Option<f64>,
    at_pickup_ms: Option<i64>,
    /// When the driver that took the trip was offered it, and when it dropped the rider off.
    busy_ms: Option<(i64, i64)>,
    offers: u32,
}

enum Event {
    Request,
    WindowClose,
    Answer {
        trip: usize,
        driver: usize,
        accept: bool,
    },
    Expire {
        trip: usize,
        driver: usize,
    },
    StepTimer {
        trip: usize,
        timer: u64,
    },
    AtPickup {
        trip: usize,
        driver: usize,
    },
    AtDestination {
        trip: usize,
        driver: usize,
    },
}

struct City {
    policy: MatchingPolicy,
    mode: Mode,
    window_ms: i64,
    /// Requests and the city: the same stream whatever the policy does.
    demand: StdRng,
    /// Drivers' answers.
    answers: StdRng,
    now: i64,
    end_ms: i64,
    warmup_ms: i64,
    queue: BinaryHeap<Reverse<(i64, u64)>>,
    events: Vec<Option<Event>>,
    index: SpatialIndex,
    drivers: Vec<Driver>,
    trips: Vec<Trip>,
    /// Trips in their search, for drivers that free up (the engine's board).
    board: BTreeSet<usize>,
    enlisted: Vec<usize>,
    idle: usize,
    samples: (f64, f64, u64),
    centre: LatLng,
    half_deg: (f64, f64),
    speed_mps: f64,
    per_ms: f64,
    accept_probability: f64,
    answer_ms: f64,
}

impl City {
    fn schedule(&mut self, at_ms: i64, event: Event) {
        let seq = self.events.len() as u64;
        self.events.push(Some(event));
        self.queue.push(Reverse((at_ms, seq)));
    }

    fn point(&mut self) -> LatLng {
        let (hl, hg) = self.half_deg;
        let lat = self.centre.lat() + self.demand.random_range(-hl..hl);
        let lng = self.centre.lng() + self.demand.random_range(-hg..hg);
        LatLng::new(lat, lng).unwrap_or(self.centre)
    }

    fn drive_ms(&self, metres: f64) -> i64 {
        (metres * ROAD_FACTOR / self.speed_mps * 1_000.0).round() as i64
    }

    fn driver_of(id: Uuid) -> usize {
        usize::try_from(id.as_u128()).unwrap_or(usize::MAX)
    }

    fn set_idle(&mut self, d: usize) {
        let driver = &mut self.drivers[d];
        if driver.state != DriverState::Idle {
            self.idle += 1;
        }
        driver.state = DriverState::Idle;
        self.index.upsert(IndexedDriver {
            driver_id: driver.id,
            position: driver.at,
            heading: None,
            vehicle: 0,
            available: true,
            seen_ms: 0,
        });
    }

    fn set_taken(&mut self, d: usize, state: DriverState) {
        let driver = &mut self.drivers[d];
        if driver.state == DriverState::Idle {
            self.idle -= 1;
        }
        driver.state = state;
        self.index.set_available(driver.id, false);
    }

    fn query(&self, t: usize, limit: usize) -> NearbyQuery {
        NearbyQuery {
            point: self.trips[t].origin,
            radius_m: self.trips[t].radius_m,
            limit,
            vehicle: None,
            fresh_since_ms: i64::MIN,
        }
    }

    fn arm_step(&mut self, t: usize) {
        let trip = &mut self.trips[t];
        trip.waited = false;
        trip.step_timer += 1;
        let timer = trip.step_timer;
        self.schedule(
            self.now + self.policy.offer_timeout_ms,
            Event::StepTimer { trip: t, timer },
        );
    }

    /// Sends one offer (`TripActor::offer` and the driver's answer).
    fn offer(&mut self, t: usize, d: usize) -> bool {
        let id = self.drivers[d].id;
        if self.drivers[d].state != DriverState::Idle {
            self.trips[t].search.refused(id);
            return false;
        }
        let expires = self.now + self.policy.offer_timeout_ms;
        let trip = &mut self.trips[t];
        trip.search.sending(id);
        trip.search.delivered(id, expires);
        trip.offers += 1;
        self.drivers[d].busy_since_ms = self.now;
        self.set_taken(d, DriverState::Offered);
        let delay = (self.answer_ms * self.answers.random_range(0.5..1.5)).round() as i64;
        let accept = self.answers.random_bool(self.accept_probability);
        if delay < self.policy.offer_timeout_ms {
            self.schedule(
                self.now + delay,
                Event::Answer {
                    trip: t,
                    driver: d,
                    accept,
                },
            );
        } else {
            self.schedule(expires, Event::Expire { trip: t, driver: d });
        }
        true
    }

    /// `TripActor::fill`: the nearest untried available drivers until the batch is full; the
    /// next step when nobody is in reach and the step is over.
    fn fill(&mut self, t: usize) {
        if self.trips[t].state != TripState::Matching || self.trips[t].awaiting_batch {
            return;
        }
        let room = self.trips[t].search.room(&self.policy);
        if room == 0 {
            return;
        }
        let skip = self.trips[t].search.skip().len();
        let hits = self.index.nearest(&self.query(t, room + skip));
        let mut offered = 0;
        for hit in hits {
            if self.trips[t].search.room(&self.policy) == 0 {
                break;
            }
            let id = hit.driver.driver_id;
            if self.trips[t].search.may_offer(id) && self.offer(t, Self::driver_of(id)) {
                offered += 1;
            }
        }
        if offered == 0 && self.trips[t].search.step_over(self.trips[t].waited) {
            self.advance(t);
        }
    }

    fn advance(&mut self, t: usize) {
        let next = self.trips[t].search.step + 1;
        match self.policy.radius_m(next) {
            Some(radius_m) => {
                let now = self.now;
                let trip = &mut self.trips[t];
                trip.search.advance(now);
                trip.radius_m = radius_m;
                self.arm_step(t);
                self.fill(t);
            }
            None => {
                self.trips[t].state = TripState::NoDriver;
                self.board.remove(&t);
            }
        }
    }

    /// The driver is free: matching trips in reach, nearest first, until one offers
    /// (`DriverActor::announce_free` and `TripActor::driver_free`).
    fn announce(&mut self, d: usize) {
        let at = self.drivers[d].at;
        let id = self.drivers[d].id;
        let mut reach: Vec<(f64, usize)> = self
            .board
            .iter()
            .map(|&t| (self.trips[t].origin.distance_m(at), t))
            .filter(|&(m, t)| m <= self.trips[t].radius_m)
            .collect();
        reach.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (_, t) in reach {
            let trip = &mut self.trips[t];
            trip.search.freed(id);
            if trip.state == TripState::Matching
                && !trip.awaiting_batch
                && trip.search.room(&self.policy) > 0
                && trip.search.may_offer(id)
                && self.offer(t, d)
            {
                return;
            }
        }
    }

    fn free(&mut self, d: usize) {
        self.set_idle(d);
        self.announce(d);
    }

    fn request(&mut self) {
        let t = self.trips.len();
        let origin = self.point();
        let destination = self.point();
        let radius_m = self.policy.radius_m(0).unwrap_or(0.0);
        self.trips.push(Trip {
            origin,
            destination,
            requested_ms: self.now,
            search: Search::new(self.now),
            radius_m,
            waited: false,
            step_timer: 0,
            awaiting_batch: false,
            candidates: Vec::new(),
            state: TripState::Matching,
            matched_ms: None,
            pickup_m: None,
            at_pickup_ms: None,
            busy_ms: None,
            offers: 0,
        });
        if self.now >= self.warmup_ms {
            self.samples.0 += self.idle as f64;
            self.samples.1 += self.board.len() as f64;
            self.samples.2 += 1;
        }
        self.board.insert(t);
        self.arm_step(t);
        if self.mode == Mode::Batched {
            self.trips[t].awaiting_batch = true;
            self.trips[t].candidates = self.index.nearest(&self.query(t, CANDIDATES_PER_TRIP));
            if self.enlisted.is_empty() {
                self.schedule(self.now + self.window_ms, Event::WindowClose);
            }
            self.enlisted.push(t);
        } else {
            self.fill(t);
        }
        let gap_ms = -(1.0_f64 - self.demand.random::<f64>()).ln() / self.per_ms;
        let next = self.now + gap_ms.round() as i64;
        if next < self.end_ms {
            self.schedule(next, Event::Request);
        }
    }

    /// `Batcher::close_window`: candidates still free and in reach, paired optimally, each
    /// trip's first offer to its driver, oldest first.
    fn close_window(&mut self) {
        let trips = std::mem::take(&mut self.enlisted);
        let mut column: rustc_hash::FxHashMap<usize, Option<usize>> =
            rustc_hash::FxHashMap::default();
        let mut drivers: Vec<usize> = Vec::new();
        let rows: Vec<Vec<(usize, u32)>> = trips
            .iter()
            .map(|&t| {
                let candidates = std::mem::take(&mut self.trips[t].candidates);
                candidates
                    .iter()
                    .filter_map(|hit| {
                        let d = Self::driver_of(hit.driver.driver_id);
                        let c = (*column.entry(d).or_insert_with(|| {
                            (self.drivers[d].state == DriverState::Idle).then(|| {
                                drivers.push(d);
                                drivers.len() - 1
                            })
                        }))?;
                        let metres = self.drivers[d].at.distance_m(self.trips[t].origin);
                        (metres <= self.trips[t].radius_m).then(|| (c, metres.round() as u32))
                    })
                    .collect()
            })
            .collect();
        let pairing = batch::optimal_sparse(&rows, drivers.len(), DEFAULT_CAP);
        for (&t, pick) in trips.iter().zip(pairing) {
            if !std::mem::take(&mut self.trips[t].awaiting_batch)
                || self.trips[t].state != TripState::Matching
            {
                continue;
            }
            let offered = pick.is_some_and(|c| {
                let d = drivers[c];
                self.trips[t].search.may_offer(self.drivers[d].id) && self.offer(t, d)
            });
            if !offered {
                self.fill(t);
            }
        }
    }

    fn answer(&mut self, t: usize, d: usize, accept: bool) {
        let id = self.drivers[d].id;
        if self.drivers[d].state != DriverState::Offered || !self.trips[t].search.is_live(id) {
            return;
        }
        if !accept || self.trips[t].state != TripState::Matching {
            self.closed(t, d);
            return;
        }
        let trip = &mut self.trips[t];
        trip.search.closed(id);
        trip.state = TripState::Assigned;
        trip.matched_ms = Some(self.now);
        let pickup_m = self.drivers[d].at.distance_m(trip.origin);
        trip.pickup_m = Some(pickup_m);
        let others: Vec<Uuid> = trip.search.open_offers().collect();
        self.board.remove(&t);
        self.drivers[d].state = DriverState::Busy;
        for other in others {
            self.trips[t].search.closed(other);
            self.free(Self::driver_of(other));
        }
        self.schedule(
            self.now + self.drive_ms(pickup_m),
            Event::AtPickup { trip: t, driver: d },
        );
    }

    /// A declined or expired offer: the driver is free, the trip fills its place.
    fn closed(&mut self, t: usize, d: usize) {
        let id = self.drivers[d].id;
        if self.trips[t].search.closed(id) {
            self.free(d);
            self.fill(t);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Request => self.request(),
            Event::WindowClose => self.close_window(),
            Event::Answer {
                trip,
                driver,
                accept,
            } => self.answer(trip, driver, accept),
            Event::Expire { trip, driver } => {
                if self.drivers[driver].state == DriverState::Offered {
                    self.closed(trip, driver);
                }
            }
            Event::StepTimer { trip, timer } => {
                if self.trips[trip].step_timer == timer {
                    self.trips[trip].waited = true;
                    self.fill(trip);
                }
            }
            Event::AtPickup { trip, driver } => {
                self.trips[trip].at_pickup_ms = Some(self.now);
                self.drivers[driver].at = self.trips[trip].origin;
                let ride = self.trips[trip]
                    .origin
                    .distance_m(self.trips[trip].destination);
                self.schedule(
                    self.now + self.drive_ms(ride),
                    Event::AtDestination { trip, driver },
                );
            }
            Event::AtDestination { trip, driver } => {
                self.trips[trip].busy_ms = Some((self.drivers[driver].busy_since_ms, self.now));
                self.drivers[driver].at = self.trips[trip].destination;
                self.free(driver);
            }
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Runs the city until every request is settled and every ride has ended.
///
/// # Errors
/// An option out of range, or `geo.index_resolution` that is not an H3 resolution.
pub fn run(settings: &Settings, options: &Options) -> Result<(Report, Vec<TripRow>), OptionError> {
    options.validate()?;
    let started = Instant::now();
    let mut policy = settings.matching.policy();
    policy.mode = match options.mode {
        Mode::Greedy => MatchingMode::Broadcast,
        Mode::Batched => MatchingMode::Batched,
        Mode::Sequential => MatchingMode::Sequential,
    };
    let res =
        h3o::Resolution::try_from(settings.geo.index_resolution).map_err(|_| OptionError {
            option: "geo.index_resolution",
            reason: "must be an H3 resolution 0–15",
        })?;
    let window_ms = options
        .window_ms
        .unwrap_or(settings.matching.batch_window_ms);
    let centre = LatLng::new(52.52, 13.405).map_err(|_| OptionError {
        option: "centre",
        reason: "invalid",
    })?;
    let half_km = options.city_km / 2.0;
    let half_deg = (
        half_km / 111.195,
        half_km / (111.195 * centre.lat().to_radians().cos()),
    );
    let mut city = City {
        policy,
        mode: options.mode,
        window_ms: i64::try_from(window_ms).unwrap_or(i64::MAX),
        demand: StdRng::seed_from_u64(options.seed),
        answers: StdRng::seed_from_u64(options.seed ^ 0x9e37_79b9_7f4a_7c15),
        now: 0,
        end_ms: (options.minutes * 60_000.0).round() as i64,
        warmup_ms: (options.warmup_minutes * 60_000.0).round() as i64,
        queue: BinaryHeap::new(),
        events: Vec::new(),
        index: SpatialIndex::new(res),
        drivers: Vec::with_capacity(options.drivers as usize),
        trips: Vec::new(),
        board: BTreeSet::new(),
        enlisted: Vec::new(),
        idle: 0,
        samples: (0.0, 0.0, 0),
        centre,
        half_deg,
        speed_mps: options.speed_kmh / 3.6,
        per_ms: options.requests_per_min / 60_000.0,
        accept_probability: options.accept_probability,
        answer_ms: options.answer_s * 1_000.0,
    };
    for d in 0..options.drivers as usize {
        let at = city.point();
        city.drivers.push(Driver {
            id: Uuid::from_u128(d as u128),
            at,
            state: DriverState::Busy,
            busy_since_ms: 0,
        });
        city.set_idle(d);
    }
    city.schedule(0, Event::Request);
    while let Some(Reverse((at_ms, seq))) = city.queue.pop() {
        city.now = at_ms;
        if let Some(event) = city.events[seq as usize].take() {
            city.handle(event);
        }
    }
    Ok(summarise(&city, options, window_ms, started))
}

fn summarise(
    city: &City,
    options: &Options,
    window_ms: u64,
    started: Instant,
) -> (Report, Vec<TripRow>) {
    let mut rows = Vec::with_capacity(city.trips.len());
    let (mut pickups, mut waits, mut matches, mut busy) = (vec![], vec![], vec![], vec![]);
    let (mut requests, mut matched, mut offers) = (0_u64, 0_u64, 0_u64);
    for (i, t) in city.trips.iter().enumerate() {
        let warmup = t.requested_ms < city.warmup_ms;
        let secs = |ms: i64| ms as f64 / 1_000.0;
        let match_s = t.matched_ms.map(|m| secs(m - t.requested_ms));
        let wait_s = t.at_pickup_ms.map(|m| secs(m - t.requested_ms));
        if !warmup {
            requests += 1;
            offers += u64::from(t.offers);
            if let (Some(m), Some(p)) = (match_s, t.pickup_m) {
                matched += 1;
                matches.push(m);
                pickups.push(p);
            }
            if let Some((from, to)) = t.busy_ms {
                busy.push(secs(to - from));
            }
            if let Some(w) = wait_s {
                waits.push(w);
            }
        }
        rows.push(TripRow {
            trip: i,
            requested_s: secs(t.requested_ms),
            warmup,
            origin: t.origin,
            outcome: if t.matched_ms.is_some() {
                "matched"
            } else {
                "no_driver"
            },
            match_s,
            pickup_m: t.pickup_m,
            wait_s,
            offers: t.offers,
            step: t.search.step,
        });
    }
    for v in [&mut pickups, &mut waits, &mut matches] {
        v.sort_by(f64::total_cmp);
    }
    let n = city.samples.2.max(1) as f64;
    let (idle, waiting) = (city.samples.0 / n, city.samples.1 / n);
    let report = Report {
        mode: options.mode,
        requests,
        matched,
        mean_pickup_m: mean(&pickups),
        p95_pickup_m: percentile(&pickups, 0.95),
        mean_wait_s: mean(&waits),
        p95_wait_s: percentile(&waits, 0.95),
        share_matched: if requests == 0 {
            0.0
        } else {
            matched as f64 / requests as f64
        },
        mean_match_s: mean(&matches),
        p95_match_s: percentile(&matches, 0.95),
        offers,
        mean_idle_drivers: idle,
        mean_waiting_riders: waiting,
        idle_drivers_per_waiting_rider: (waiting > 0.0).then(|| idle / waiting),
        mean_busy_s: mean(&busy),
        drivers: options.drivers,
        requests_per_min: options.requests_per_min,
        minutes: options.minutes,
        warmup_minutes: options.warmup_minutes,
        seed: options.seed,
        window_ms: (options.mode == Mode::Batched).then_some(window_ms),
        wall_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    (report, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(mode: Mode) -> Options {
        Options {
            mode,
            drivers: 300,
            requests_per_min: 12.0,
            minutes: 40.0,
            warmup_minutes: 10.0,
            seed: 7,
            ..Options::default()
        }
    }

    fn without_wall(mut r: Report) -> String {
        r.wall_ms = 0;
        serde_json::to_string(&r).unwrap_or_default()
    }

    #[test]
    fn the_same_seed_gives_the_same_city_and_another_seed_another() {
        let settings = Settings::default();
        let (a, rows_a) = run(&settings, &options(Mode::Batched)).unwrap();
        let (b, rows_b) = run(&settings, &options(Mode::Batched)).unwrap();
        assert_eq!(without_wall(a.clone()), without_wall(b));
        assert_eq!(rows_a.len(), rows_b.len());
        let other = Options {
            seed: 8,
            ..options(Mode::Batched)
        };
        let (c, _) = run(&settings, &other).unwrap();
        assert_ne!(without_wall(a), without_wall(c));
    }

    #[test]
    fn every_policy_sees_the_same_requests() {
        let settings = Settings::default();
        let runs: Vec<Vec<TripRow>> = [Mode::Greedy, Mode::Batched, Mode::Sequential]
            .into_iter()
            .map(|m| run(&settings, &options(m)).unwrap().1)
            .collect();
        for rows in &runs[1..] {
            assert_eq!(rows.len(), runs[0].len());
            for (x, y) in rows.iter().zip(&runs[0]) {
                assert_eq!(x.origin, y.origin);
                assert!((x.requested_s - y.requested_s).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn the_figures_add_up() {
        let settings = Settings::default();
        for mode in [Mode::Greedy, Mode::Batched, Mode::Sequential] {
            let (r, rows) = run(&settings, &options(mode)).unwrap();
            let counted: Vec<&TripRow> = rows.iter().filter(|t| !t.warmup).collect();
            assert_eq!(r.requests, counted.len() as u64);
            let matched = counted.iter().filter(|t| t.outcome == "matched").count() as u64;
            assert_eq!(r.matched, matched);
            assert!(r.matched > 0 && r.matched <= r.requests);
            assert!(r.offers >= r.matched, "{mode:?}: every match took an offer");
            assert!(r.p95_pickup_m >= r.mean_pickup_m * 0.5);
            assert!(
                r.p95_pickup_m <= 5_000.0,
                "nobody is offered beyond the last radius step"
            );
            for t in counted.iter().filter(|t| t.outcome == "matched") {
                let (m, w) = (t.match_s.unwrap_or(-1.0), t.wait_s.unwrap_or(-1.0));
                assert!(
                    m >= 0.0 && w >= m,
                    "a driver reaches the pickup after it is assigned"
                );
            }
            assert_eq!(r.window_ms.is_some(), mode == Mode::Batched);
        }
    }

    #[test]
    fn with_drivers_to_spare_batching_shortens_pickups_and_greedy_offers_a_batch() {
        let settings = Settings::default();
        let greedy = run(&settings, &options(Mode::Greedy)).unwrap().0;
        let batched = run(&settings, &options(Mode::Batched)).unwrap().0;
        assert_eq!(greedy.share_matched, 1.0);
        assert_eq!(batched.share_matched, 1.0);
        assert!(
            batched.mean_pickup_m < greedy.mean_pickup_m * 0.9,
            "{} against {}",
            batched.mean_pickup_m,
            greedy.mean_pickup_m
        );
        // Broadcast offers each trip to a batch of five; batched offers its driver alone first.
        assert!(greedy.offers as f64 / greedy.requests as f64 > 4.0);
        assert!((batched.offers as f64 / batched.requests as f64) < 2.5);
        // A window's requests wait for it to close before their first offer.
        assert!(batched.mean_match_s > greedy.mean_match_s);
    }

    #[test]
    fn a_city_without_enough_drivers_leaves_requests_unmatched() {
        let settings = Settings::default();
        let starved = Options {
            drivers: 20,
            requests_per_min: 30.0,
            ..options(Mode::Greedy)
        };
        let (r, rows) = run(&settings, &starved).unwrap();
        assert!(r.share_matched < 0.5, "{}", r.share_matched);
        assert!(rows.iter().any(|t| t.outcome == "no_driver" && t.step == 1));
    }

    #[test]
    fn options_out_of_range_are_named() {
        let settings = Settings::default();
        type Spoil = fn(&mut Options);
        let cases: Vec<(Spoil, &str)> = vec![
            (|o| o.drivers = 0, "--drivers"),
            (|o| o.requests_per_min = 0.0, "--requests-per-min"),
            (|o| o.requests_per_min = f64::NAN, "--requests-per-min"),
            (|o| o.minutes = -1.0, "--minutes"),
            (|o| o.warmup_minutes = 60.0, "--warmup-minutes"),
            (|o| o.window_ms = Some(0), "--window-ms"),
            (|o| o.city_km = 0.0, "--city-km"),
            (|o| o.speed_kmh = f64::INFINITY, "--speed-kmh"),
            (|o| o.accept_probability = 0.0, "--accept-probability"),
            (|o| o.answer_s = -2.0, "--answer-s"),
        ];
        for (spoil, option) in cases {
            let mut o = Options::default();
            spoil(&mut o);
            let e = run(&settings, &o).err().map(|e| e.option);
            assert_eq!(e, Some(option));
        }
    }

    #[test]
    fn the_csv_has_a_header_and_a_line_per_request() {
        let settings = Settings::default();
        let (_, rows) = run(&settings, &options(Mode::Greedy)).unwrap();
        let mut out = Vec::new();
        write_csv(&rows, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), rows.len() + 1);
        assert!(lines[0].starts_with("trip,requested_s,warmup,"));
        let columns = lines[0].split(',').count();
        assert!(lines.iter().all(|l| l.split(',').count() == columns));
    }
}
