//! Reconnect storm: N driver sockets on the engine binary, the engine killed (`kill -9`) and
//! started again, every driver reconnecting at once.
//!
//! ```text
//! cargo build --release && cargo run --release --example reconnect_storm -- \
//!     [binary=target/release/hexdispatch] [drivers=15000] [trips=300] [sources=8]
//! ```
//!
//! The engine runs as a child process on its SQLite default (a scratch folder) with its normal
//! settings. Drivers are real WebSocket clients (tokio-tungstenite), spread over `sources`
//! loopback addresses (127.0.0.1 … 127.0.0.N) so that no source runs out of ports; each sends a
//! position and goes online after every `session` frame, as an app does, accepts offers if its
//! number is even and ignores them otherwise. Riders request `trips` trips over HTTP. Then the
//! engine is killed and restarted; each driver reconnects as soon as its socket ends, retrying
//! every 100 ms while nothing listens. Reported: time until every driver has its `session` frame
//! again, connect errors once the engine listened, connect-to-session latency (p50/p99/max), and
//! whether every driver told it won a trip gets that trip back in its `session` frame and every
//! trip still matching is offered again.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hexdispatch::dispatch::Role;
use hexdispatch::http::tokens::JwtKeys;
use rand::{Rng, SeedableRng, rngs::StdRng};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

const SECRET: &str = "reconnect-storm-secret";

fn arg(n: usize) -> Option<String> {
    std::env::args().nth(n)
}

fn start_engine(binary: &str, dir: &std::path::Path, port: u16) -> Child {
    Command::new(binary)
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .current_dir(dir)
        .env("HEXDISPATCH__AUTH__JWT_SECRET", SECRET)
        .env("HEXDISPATCH__LOG__LEVEL", "error")
        .env("HEXDISPATCH__MATCHING__OFFER_TIMEOUT_S", "120")
        .env("HEXDISPATCH__LIMITS__TRIPS_PER_RIDER_PER_MINUTE", "1000000")
        .env("HEXDISPATCH__LIMITS__TRIPS_PER_IP_PER_MINUTE", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the engine binary starts")
}

/// One HTTP/1.1 request on a fresh connection; the status and the JSON body.
async fn http(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> Option<(u16, Value)> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

async fn wait_ready(port: u16) -> Instant {
    loop {
        if let Some((200, _)) = http(port, "GET", "/ready", "", "").await {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Default)]
struct Shared {
    /// Driver → trip it was told it won.
    won: Mutex<HashMap<usize, String>>,
    /// Trips offered to some driver, per epoch (0 before the kill, 1 after).
    offered: [Mutex<HashSet<String>>; 2],
    /// Drivers whose `session` frame after the restart named their trip.
    got_trip_back: Mutex<HashMap<usize, String>>,
    /// Sessions opened in the current epoch.
    sessions: [AtomicUsize; 2],
    /// Connect → `session` frame latencies, µs, per epoch.
    latency_us: [Mutex<Vec<u64>>; 2],
    /// Failed connection attempts once the engine was listening, per epoch.
    errors: [AtomicUsize; 2],
    /// 0 before the kill, 1 after.
    epoch: AtomicUsize,
    /// The epoch's engine is accepting (set once it listens).
    listening_since_ms: AtomicU64,
}

async fn driver(
    n: usize,
    port: u16,
    source: IpAddr,
    token: String,
    at: (f64, f64),
    shared: Arc<Shared>,
) {
    let accepts = n.is_multiple_of(2);
    loop {
        let epoch = shared.epoch.load(Ordering::Acquire);
        let started = Instant::now();
        let connected = async {
            let socket = TcpSocket::new_v4().ok()?;
            socket.bind(SocketAddr::new(source, 0)).ok()?;
            let tcp = socket
                .connect(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
                .await
                .ok()?;
            let mut request = format!("ws://127.0.0.1:{port}/ws/driver")
                .into_client_request()
                .ok()?;
            request
                .headers_mut()
                .insert("Authorization", format!("Bearer {token}").parse().ok()?);
            let (ws, _) = tokio_tungstenite::client_async(request, tcp).await.ok()?;
            Some(ws)
        }
        .await;
        let Some(mut ws) = connected else {
            if shared.listening_since_ms.load(Ordering::Acquire) > 0 {
                shared.errors[epoch].fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut greeted = false;
        while let Some(Ok(message)) = ws.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            match frame["type"].as_str() {
                Some("session") if !greeted => {
                    greeted = true;
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    shared.latency_us[epoch]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(micros);
                    shared.sessions[epoch].fetch_add(1, Ordering::AcqRel);
                    if epoch == 1
                        && let Some(trip) = frame["trip"]["trip_id"].as_str()
                    {
                        shared
                            .got_trip_back
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(n, trip.to_owned());
                    }
                    let hello = [
                        json!({"type": "location", "lat": at.0, "lng": at.1}),
                        json!({"type": "status", "status": "online"}),
                    ];
                    for frame in hello {
                        if ws.send(Message::text(frame.to_string())).await.is_err() {
                            break;
                        }
                    }
                }
                Some("offer") => {
                    let trip = frame["trip_id"].as_str().unwrap_or_default().to_owned();
                    shared.offered[epoch]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(trip.clone());
                    if accepts {
                        let accept = json!({"type": "accept", "trip_id": trip});
                        let _ = ws.send(Message::text(accept.to_string())).await;
                    }
                }
                Some("trip_assigned") if epoch == 0 => {
                    if let Some(trip) = frame["trip"]["trip_id"].as_str() {
                        shared
                            .won
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(n, trip.to_owned());
                    }
                }
                _ => {}
            }
        }
        if epoch == 1 && shared.epoch.load(Ordering::Acquire) == 1 && greeted {
            return; // The run is over (the engine was stopped at the end).
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1_000.0
}

fn main() {
    let binary = arg(1).unwrap_or_else(|| "target/release/hexdispatch".into());
    let binary = std::fs::canonicalize(&binary)
        .unwrap_or_else(|e| panic!("no engine binary at {binary}: {e}"))
        .display()
        .to_string();
    let drivers: usize = arg(2).and_then(|a| a.parse().ok()).unwrap_or(15_000);
    let trips: usize = arg(3).and_then(|a| a.parse().ok()).unwrap_or(300);
    let sources: u8 = arg(4).and_then(|a| a.parse().ok()).unwrap_or(8).max(1);
    let dir = std::env::temp_dir().join(format!("hexdispatch-storm-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let scratch = dir.clone();
    runtime.block_on(async move {
        let keys = JwtKeys::new(&SecretString::from(SECRET));
        let mut engine = start_engine(&binary, &dir, port);
        wait_ready(port).await;
        let shared = Arc::new(Shared::default());
        shared.listening_since_ms.store(1, Ordering::Release);
        let mut rng = StdRng::seed_from_u64(7);
        let (lat0, lng0, hl, hg) = (52.52, 13.405, 15.0 / 111.2, 15.0 / (111.2 * 0.6088));
        let started = Instant::now();
        for n in 0..drivers {
            let token = keys
                .issue(Uuid::now_v7(), Role::Driver, None, 86_400)
                .expect("token");
            let at = (
                lat0 + rng.random_range(-hl..hl),
                lng0 + rng.random_range(-hg..hg),
            );
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (n % usize::from(sources)) as u8));
            tokio::spawn(driver(n, port, source, token, at, Arc::clone(&shared)));
        }
        while shared.sessions[0].load(Ordering::Acquire) < drivers {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let first_connect = started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;

        // Riders request trips; half the drivers accept what they are offered.
        let rider = keys
            .issue(Uuid::now_v7(), Role::Rider, None, 86_400)
            .expect("token");
        let mut requested = Vec::new();
        for _ in 0..trips {
            let origin = (lat0 + rng.random_range(-hl..hl), lng0 + rng.random_range(-hg..hg));
            let body = json!({
                "origin": {"lat": origin.0, "lng": origin.1},
                "destination": {"lat": origin.0 + 0.02, "lng": origin.1 + 0.02},
            })
            .to_string();
            if let Some((201, trip)) = http(port, "POST", "/api/trips", &rider, &body).await {
                requested.push(trip["trip_id"].as_str().unwrap_or_default().to_owned());
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let won = shared.won.lock().unwrap_or_else(|e| e.into_inner()).clone();

        // kill -9, and back.
        let _ = engine.kill();
        let _ = engine.wait();
        shared.listening_since_ms.store(0, Ordering::Release);
        shared.epoch.store(1, Ordering::Release);
        let restarted = Instant::now();
        let mut engine = start_engine(&binary, &dir, port);
        let ready = wait_ready(port).await;
        shared.listening_since_ms.store(1, Ordering::Release);
        let deadline = Instant::now() + Duration::from_secs(180);
        while shared.sessions[1].load(Ordering::Acquire) < drivers && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let all_back = restarted.elapsed();
        let ready_after = ready.duration_since(restarted);
        tokio::time::sleep(Duration::from_secs(5)).await;

        let operator = keys
            .issue(Uuid::now_v7(), Role::Operator, None, 86_400)
            .expect("token");
        let mut still_matching = Vec::new();
        for trip in &requested {
            if let Some((200, t)) = http(port, "GET", &format!("/api/trips/{trip}"), &operator, "").await
                && t["status"] == "MATCHING"
            {
                still_matching.push(trip.clone());
            }
        }
        let offered_again = shared.offered[1].lock().unwrap_or_else(|e| e.into_inner()).clone();
        let back = shared.got_trip_back.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let trips_back = won.iter().filter(|(n, t)| back.get(n) == Some(t)).count();
        let matching_reoffered = still_matching
            .iter()
            .filter(|t| offered_again.contains(*t))
            .count();
        let mut latency = std::mem::take(&mut *shared.latency_us[1].lock().unwrap_or_else(|e| e.into_inner()));
        latency.sort_unstable();
        let mut first = std::mem::take(&mut *shared.latency_us[0].lock().unwrap_or_else(|e| e.into_inner()));
        first.sort_unstable();
        let report = json!({
            "drivers": drivers,
            "sources": sources,
            "first_connect_all_s": first_connect.as_secs_f64(),
            "first_connect_ms": {"p50": percentile(&first, 0.5), "p99": percentile(&first, 0.99), "max": percentile(&first, 1.0)},
            "trips_requested": requested.len(),
            "drivers_told_they_won": won.len(),
            "restart_ready_after_s": ready_after.as_secs_f64(),
            "sessions_back": shared.sessions[1].load(Ordering::Acquire),
            "all_back_after_restart_s": all_back.as_secs_f64(),
            "connect_errors_after_listening": shared.errors[1].load(Ordering::Acquire),
            "reconnect_ms": {"p50": percentile(&latency, 0.5), "p99": percentile(&latency, 0.99), "max": percentile(&latency, 1.0)},
            "won_trips_back_in_session_frame": trips_back,
            "trips_matching_after_restart": still_matching.len(),
            "of_which_offered_again": matching_reoffered,
        });
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        shared.epoch.store(1, Ordering::Release);
        let _ = engine.kill();
        let _ = engine.wait();
    });
    let _ = std::fs::remove_dir_all(&scratch);
}
