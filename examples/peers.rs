//! The peers of `GET /api/locations/nearby`, on the same drivers: Redis `GEOSEARCH` and PostGIS
//! KNN on a GiST index, measured the way `hexdispatch loadgen search` measures the engine (the
//! same points, from `loadgen::search_points`, the same number of clients as fast as they go, HDR histograms).
//!
//! ```text
//! cargo run --release --example peers -- load   POSITIONS.csv REDIS_URL POSTGRES_URL
//! cargo run --release --example peers -- redis   REDIS_URL    RADIUS_M CLIENTS SECONDS
//! cargo run --release --example peers -- postgis POSTGRES_URL RADIUS_M CLIENTS SECONDS [CONNECTIONS=8]
//! ```
//!
//! `POSITIONS.csv` is what `hexdispatch loadgen … --online N --positions-out FILE` wrote:
//! `driver_id,lat,lng` of the drivers it put online in the engine. `benches/peers/run.sh` runs
//! the whole comparison. Each measuring run prints one JSON line.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hexdispatch::tools::loadgen;
use sqlx::postgres::PgPoolOptions;

/// The city `loadgen` uses by default.
fn city() -> (f64, f64, f64) {
    loadgen::Options::new(loadgen::Scenario::Search, "").city
}

fn arg(n: usize) -> anyhow::Result<String> {
    std::env::args().nth(n).ok_or_else(|| {
        anyhow::anyhow!("missing argument {n}; see the usage at the top of examples/peers.rs")
    })
}

fn num<T: std::str::FromStr>(n: usize, default: T) -> T {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match arg(1)?.as_str() {
        "load" => load(&arg(2)?, &arg(3)?, &arg(4)?).await,
        "redis" => {
            let url = arg(2)?;
            let (radius, clients, seconds) = (num(3, 2_000.0), num(4, 50), num(5, 10.0));
            measure("redis", radius, clients, seconds, move |w| {
                let url = url.clone();
                async move {
                    let client = redis::Client::open(url)?;
                    let conn = client.get_multiplexed_async_connection().await?;
                    let mut points = loadgen::search_points(city(), w);
                    Ok(move || {
                        let (lat, lng) = points.next().unwrap_or((city().0, city().1));
                        let mut conn = conn.clone();
                        async move {
                            let _: redis::Value = redis::cmd("GEOSEARCH")
                                .arg("drivers")
                                .arg("FROMLONLAT")
                                .arg(lng)
                                .arg(lat)
                                .arg("BYRADIUS")
                                .arg(radius)
                                .arg("m")
                                .arg("ASC")
                                .arg("COUNT")
                                .arg(5)
                                .arg("WITHCOORD")
                                .arg("WITHDIST")
                                .query_async(&mut conn)
                                .await?;
                            Ok(())
                        }
                    })
                }
            })
            .await
        }
        "postgis" => {
            let url = arg(2)?;
            let (radius, clients, seconds) = (num(3, 2_000.0), num(4, 50), num(5, 10.0));
            let connections: u32 = num(6, 8);
            let pool = PgPoolOptions::new()
                .max_connections(connections)
                .min_connections(connections)
                .connect(&url)
                .await?;
            measure("postgis", radius, clients, seconds, move |w| {
                let pool = pool.clone();
                async move {
                    let mut points = loadgen::search_points(city(), w);
                    Ok(move || {
                        let (lat, lng) = points.next().unwrap_or((city().0, city().1));
                        let pool = pool.clone();
                        async move {
                            let _rows: Vec<(String, f64, f64, f64)> = sqlx::query_as(
                                "SELECT id::text, ST_Y(geom::geometry), ST_X(geom::geometry), \
                                 ST_Distance(geom, p) \
                                 FROM drivers, (SELECT ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography AS p) q \
                                 WHERE ST_DWithin(geom, p, $3) ORDER BY geom <-> p LIMIT 5",
                            )
                            .bind(lng)
                            .bind(lat)
                            .bind(radius)
                            .fetch_all(&pool)
                            .await?;
                            Ok(())
                        }
                    })
                }
            })
            .await
        }
        other => anyhow::bail!("unknown command {other:?}: load, redis or postgis"),
    }
}

/// Loads the drivers into Redis (`GEOADD drivers`) and PostGIS (table `drivers`, GiST index).
async fn load(positions: &str, redis_url: &str, pg_url: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(positions)?;
    let rows: Vec<(uuid::Uuid, f64, f64)> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut f = l.split(',');
            let (Some(id), Some(lat), Some(lng)) = (f.next(), f.next(), f.next()) else {
                anyhow::bail!("line {l:?}: expected driver_id,lat,lng");
            };
            Ok((id.parse()?, lat.parse()?, lng.parse()?))
        })
        .collect::<anyhow::Result<_>>()?;
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("DEL")
        .arg("drivers")
        .query_async(&mut conn)
        .await?;
    for chunk in rows.chunks(1_000) {
        let mut cmd = redis::cmd("GEOADD");
        cmd.arg("drivers");
        for (id, lat, lng) in chunk {
            cmd.arg(*lng).arg(*lat).arg(id.to_string());
        }
        let _: i64 = cmd.query_async(&mut conn).await?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(pg_url)
        .await?;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS postgis")
        .execute(&pool)
        .await?;
    sqlx::query("DROP TABLE IF EXISTS drivers")
        .execute(&pool)
        .await?;
    sqlx::query("CREATE TABLE drivers (id uuid PRIMARY KEY, geom geography(Point, 4326) NOT NULL)")
        .execute(&pool)
        .await?;
    for chunk in rows.chunks(5_000) {
        let ids: Vec<String> = chunk.iter().map(|r| r.0.to_string()).collect();
        let lats: Vec<f64> = chunk.iter().map(|r| r.1).collect();
        let lngs: Vec<f64> = chunk.iter().map(|r| r.2).collect();
        sqlx::query(
            "INSERT INTO drivers (id, geom) SELECT id::uuid, ST_SetSRID(ST_MakePoint(lng, lat), 4326)::geography \
             FROM UNNEST($1::text[], $2::float8[], $3::float8[]) AS t(id, lat, lng)",
        )
        .bind(&ids)
        .bind(&lats)
        .bind(&lngs)
        .execute(&pool)
        .await?;
    }
    sqlx::query("CREATE INDEX drivers_geom ON drivers USING gist (geom)")
        .execute(&pool)
        .await?;
    sqlx::query("ANALYZE drivers").execute(&pool).await?;
    println!("{{\"loaded\": {}}}", rows.len());
    Ok(())
}

/// Runs `clients` loops, each asking as fast as it goes for `seconds`, and prints the figures.
async fn measure<F, Fut, Q, QFut>(
    name: &str,
    radius_m: f64,
    clients: usize,
    seconds: f64,
    client: F,
) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Q>>,
    Q: FnMut() -> QFut + 'static,
    QFut: std::future::Future<Output = anyhow::Result<()>> + 'static,
{
    let all = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let local = tokio::task::LocalSet::new();
    let mut queries = Vec::with_capacity(clients);
    for w in 0..clients {
        queries.push(client(w).await?);
    }
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(seconds);
    local
        .run_until(async {
            let tasks: Vec<_> = queries
                .into_iter()
                .map(|mut query| {
                    let (all, errors) = (Arc::clone(&all), Arc::clone(&errors));
                    tokio::task::spawn_local(async move {
                        while Instant::now() < end {
                            let begun = Instant::now();
                            match query().await {
                                Ok(()) => {
                                    let us = begun.elapsed().as_micros() as u64;
                                    let _ = all
                                        .lock()
                                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                                        .record(us.max(1));
                                }
                                Err(_) => {
                                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                let _ = task.await;
            }
        })
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let h = all
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1_000.0;
    println!(
        "{{\"peer\": \"{name}\", \"radius_m\": {radius_m}, \"clients\": {clients}, \"completed\": {}, \
         \"rps\": {:.1}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}, \"errors\": {}}}",
        h.len(),
        h.len() as f64 / elapsed,
        q(0.5),
        q(0.99),
        h.max() as f64 / 1_000.0,
        errors.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}
