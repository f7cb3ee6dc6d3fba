//! Every metric the engine exports, declared in one place and described at start-up.
//!
//! Names are prefixed `hexdispatch_`, counters end in `_total`, units are in the name, and labels
//! are low-cardinality (outcome, reason, role): never a driver, trip or cell id.

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Location updates accepted, by `source` (`ws` | `rest`).
pub const LOCATION_UPDATES: &str = "hexdispatch_location_updates_total";
/// Location updates dropped, by `reason` (`driver_mailbox_full` | `cell_mailbox_full` | `driver_gone`).
pub const LOCATION_UPDATES_DROPPED: &str = "hexdispatch_location_updates_dropped_total";
/// Index upserts applied by cell actors.
pub const INDEX_UPSERTS: &str = "hexdispatch_index_upserts_total";
/// Drivers evicted from the index because their position went stale.
pub const INDEX_EVICTIONS: &str = "hexdispatch_index_evictions_total";
/// Cell actors (shards) alive.
pub const SHARDS: &str = "hexdispatch_shards";
/// Nearby query latency through the cell actors, seconds.
pub const NEARBY_DURATION: &str = "hexdispatch_nearby_query_duration_seconds";
/// Drivers whose status is online.
pub const DRIVERS_ONLINE: &str = "hexdispatch_drivers_online";
/// Driver actors alive.
pub const DRIVER_ACTORS: &str = "hexdispatch_driver_actors";
/// Open WebSocket sessions, by `role`.
pub const WS_SESSIONS_OPEN: &str = "hexdispatch_ws_sessions_open";
/// WebSocket frames refused with an error frame or a close, by `code`.
pub const WS_FRAMES_REJECTED: &str = "hexdispatch_ws_frames_rejected_total";
/// HTTP responses, by `status` class (`2xx`, `4xx`, `5xx`).
pub const HTTP_RESPONSES: &str = "hexdispatch_http_responses_total";

/// Trip status transitions, by the `status` entered.
pub const TRIP_TRANSITIONS: &str = "hexdispatch_trip_transitions_total";
/// Trips in each live status (REQUESTED … TRIP_STARTED), by `status`.
pub const TRIPS_ACTIVE: &str = "hexdispatch_trips_active";
/// Trips requested, by `outcome` (`created` | `replayed` | `refused`).
pub const TRIP_REQUESTS: &str = "hexdispatch_trip_requests_total";
/// Offers, by `outcome` (`sent` | `accepted` | `declined` | `expired` | `taken` | `rider_cancelled` | `busy`).
pub const OFFERS: &str = "hexdispatch_offers_total";
/// Time from a trip request (or a booked trip's dispatch) to its first offer delivered to a
/// driver, seconds, for trips offered in their first radius step without waiting for a driver to
/// appear (the dispatch path itself; a trip that waits is not counted).
pub const TRIP_TIME_TO_FIRST_OFFER: &str = "hexdispatch_trip_time_to_first_offer_seconds";
/// Time from a trip request to a driver's accept, seconds.
pub const TRIP_TIME_TO_ACCEPT: &str = "hexdispatch_trip_time_to_accept_seconds";
/// WebSocket frames dropped because a socket's queue was full, by `role`.
pub const WS_FRAMES_DROPPED: &str = "hexdispatch_ws_frames_dropped_total";

/// Writes queued for the database and not yet committed.
pub const DB_PENDING: &str = "hexdispatch_db_pending_writes";
/// Database commit latency (one batch), seconds.
pub const DB_COMMIT_DURATION: &str = "hexdispatch_db_commit_duration_seconds";
/// Writes per committed batch.
pub const DB_BATCH_SIZE: &str = "hexdispatch_db_batch_writes";
/// Failed batch commits (each retried).
pub const DB_WRITE_ERRORS: &str = "hexdispatch_db_write_errors_total";
/// Sampled positions not written because the database queue was over its bound.
pub const POSITIONS_SKIPPED: &str = "hexdispatch_position_samples_skipped_total";
/// Driver snapshots written to Redis.
pub const SNAPSHOT_WRITES: &str = "hexdispatch_snapshot_writes_total";
/// Failed Redis snapshot batches.
pub const SNAPSHOT_ERRORS: &str = "hexdispatch_snapshot_errors_total";

/// Outbox rows published to the bus.
pub const OUTBOX_PUBLISHED: &str = "hexdispatch_outbox_published_total";
/// Age of the oldest outbox row not yet published, seconds (0 when drained), as the relay last
/// saw it.
pub const OUTBOX_LAG: &str = "hexdispatch_outbox_lag_seconds";
/// 1 when `/ready` would answer 200, else 0 (set whenever `/metrics` or `/ready` is read).
pub const READY: &str = "hexdispatch_ready";
/// Each configured dependency as `/ready` sees it, by `dependency` (`database` | `broker` |
/// `redis`): 1 up, 0 down.
pub const DEPENDENCY_UP: &str = "hexdispatch_dependency_up";
/// Failed publishes (each retried with backoff).
pub const OUTBOX_PUBLISH_ERRORS: &str = "hexdispatch_outbox_publish_errors_total";
/// Trip charges, by `outcome` (`charged` | `already_charged` | `insufficient_funds` | `error`).
pub const PAYMENTS: &str = "hexdispatch_payments_total";
/// Payment messages dead-lettered, by `reason` (`malformed` | `attempts`).
pub const PAYMENTS_DEAD_LETTERED: &str = "hexdispatch_payment_messages_dead_lettered_total";
/// Final fares capped at `pricing.max_fare_ratio` × the estimate and flagged for review.
pub const FARES_CAPPED: &str = "hexdispatch_fares_capped_total";
/// Refunds applied by operators (a repeated reference is not counted).
pub const REFUNDS: &str = "hexdispatch_refunds_total";

/// Socket sessions that ended, by `role` (driver, rider) and `reason`: `gone` (the peer vanished
/// or an I/O error: no close frame could be exchanged), `closed` (the client closed it), `idle`,
/// `replaced` (a newer session of the same driver), `shutdown`, `frame_too_large`,
/// `protocol_error`.
pub const WS_DISCONNECTS: &str = "hexdispatch_ws_disconnects_total";

/// Actor handlers that panicked and whose actor was rebuilt from what it owns, by `actor`
/// (`trip` | `cell`).
pub const ACTOR_RESTARTS: &str = "hexdispatch_actor_restarts_total";

fn describe() {
    describe_counter!(
        FARES_CAPPED,
        Unit::Count,
        "Final fares capped at pricing.max_fare_ratio times the estimate, flagged for review."
    );
    describe_counter!(REFUNDS, Unit::Count, "Refunds applied by operators.");
    describe_gauge!(
        OUTBOX_LAG,
        Unit::Seconds,
        "Age of the oldest unpublished outbox row (0 when drained)."
    );
    describe_gauge!(READY, "1 when /ready would answer 200, else 0.");
    describe_gauge!(
        DEPENDENCY_UP,
        "Each configured dependency as /ready sees it: 1 up, 0 down."
    );
    describe_counter!(
        WS_DISCONNECTS,
        Unit::Count,
        "Socket sessions that ended, by role and reason."
    );
    describe_counter!(
        ACTOR_RESTARTS,
        Unit::Count,
        "Actor handlers that panicked; the actor was rebuilt from what it owns."
    );
    describe_counter!(
        OUTBOX_PUBLISHED,
        Unit::Count,
        "Outbox rows published to the bus."
    );
    describe_counter!(
        OUTBOX_PUBLISH_ERRORS,
        Unit::Count,
        "Failed publishes, each retried with backoff."
    );
    describe_counter!(PAYMENTS, Unit::Count, "Trip charges, by outcome.");
    describe_counter!(
        PAYMENTS_DEAD_LETTERED,
        Unit::Count,
        "Payment messages dead-lettered, by reason."
    );
    describe_gauge!(
        DB_PENDING,
        Unit::Count,
        "Writes queued for the database, not yet committed."
    );
    describe_histogram!(
        DB_COMMIT_DURATION,
        Unit::Seconds,
        "Database commit latency of one batch."
    );
    describe_histogram!(DB_BATCH_SIZE, Unit::Count, "Writes per committed batch.");
    describe_counter!(
        DB_WRITE_ERRORS,
        Unit::Count,
        "Failed batch commits, each retried."
    );
    describe_counter!(
        POSITIONS_SKIPPED,
        Unit::Count,
        "Sampled positions skipped while the database queue was over its bound."
    );
    describe_counter!(
        SNAPSHOT_WRITES,
        Unit::Count,
        "Driver snapshots written to Redis."
    );
    describe_counter!(
        SNAPSHOT_ERRORS,
        Unit::Count,
        "Failed Redis snapshot batches."
    );
    describe_counter!(
        TRIP_TRANSITIONS,
        Unit::Count,
        "Trip status transitions, by the status entered."
    );
    describe_gauge!(
        TRIPS_ACTIVE,
        Unit::Count,
        "Trips in each live status (REQUESTED to TRIP_STARTED)."
    );
    describe_counter!(
        TRIP_REQUESTS,
        Unit::Count,
        "Trip requests, by outcome (created, replayed, refused)."
    );
    describe_counter!(
        OFFERS,
        Unit::Count,
        "Offers, by outcome (sent, accepted, declined, expired, taken, rider_cancelled, busy)."
    );
    describe_histogram!(
        TRIP_TIME_TO_FIRST_OFFER,
        Unit::Seconds,
        "Time from a trip request to its first offer delivered to a driver."
    );
    describe_histogram!(
        TRIP_TIME_TO_ACCEPT,
        Unit::Seconds,
        "Time from a trip request to a driver's accept."
    );
    describe_counter!(
        WS_FRAMES_DROPPED,
        Unit::Count,
        "WebSocket frames dropped on a full socket queue, by role."
    );
    describe_counter!(
        LOCATION_UPDATES,
        Unit::Count,
        "Location updates accepted, by source (ws, rest)."
    );
    describe_counter!(
        LOCATION_UPDATES_DROPPED,
        Unit::Count,
        "Location updates dropped under backpressure, by reason."
    );
    describe_counter!(
        INDEX_UPSERTS,
        Unit::Count,
        "Driver positions applied to the in-memory index."
    );
    describe_counter!(
        INDEX_EVICTIONS,
        Unit::Count,
        "Drivers evicted from the index with a stale position."
    );
    describe_gauge!(SHARDS, Unit::Count, "Cell actors (index shards) alive.");
    describe_histogram!(
        NEARBY_DURATION,
        Unit::Seconds,
        "Nearby query latency through the cell actors."
    );
    describe_gauge!(
        DRIVERS_ONLINE,
        Unit::Count,
        "Drivers whose status is online."
    );
    describe_gauge!(DRIVER_ACTORS, Unit::Count, "Driver actors alive.");
    describe_gauge!(
        WS_SESSIONS_OPEN,
        Unit::Count,
        "Open WebSocket sessions, by role."
    );
    describe_counter!(
        WS_FRAMES_REJECTED,
        Unit::Count,
        "WebSocket frames refused, by error code."
    );
    describe_counter!(
        HTTP_RESPONSES,
        Unit::Count,
        "HTTP responses, by status class."
    );
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
///
/// Metrics are process-global, so several engines in one process (as in the integration tests)
/// share one registry.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5,
                        0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0, 60.0,
                    ],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. by an embedding program); the handle
            // then renders an empty registry rather than failing start-up.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            // Rare counters exist from the start, so an alert on their increase sees the first.
            for reason in ["malformed", "attempts"] {
                metrics::counter!(PAYMENTS_DEAD_LETTERED, "reason" => reason).absolute(0);
            }
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    /// Metric names declared in this module.
    fn declared() -> Vec<&'static str> {
        include_str!("metrics.rs")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub const "))
            .filter_map(|l| l.split('"').nth(1))
            .collect()
    }

    fn mentioned(text: &str) -> Vec<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("hexdispatch_"))
            .map(|w| {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .fold(w.to_owned(), |w, s| {
                        w.strip_suffix(s).map_or(w.clone(), str::to_owned)
                    })
            })
            .collect()
    }

    #[test]
    fn the_dashboard_uses_only_declared_metrics_and_the_runbook_lists_them_all() {
        let names = declared();
        assert!(names.len() > 20);
        for name in mentioned(include_str!("../deploy/grafana/hexdispatch.json")) {
            assert!(
                names.contains(&name.as_str()),
                "the dashboard uses {name}, which is not declared"
            );
        }
        let catalogue = include_str!("../docs/OPERATIONS.md");
        for name in &names {
            let short = name.trim_start_matches("hexdispatch_");
            assert!(
                catalogue.contains(short),
                "OPERATIONS.md does not list {name}"
            );
        }
    }
}
