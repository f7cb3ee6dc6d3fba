//! Real PostgreSQL and Redis for the tests that need them, each test with a database or key prefix
//! of its own; an engine run as a child process (for `kill -9`); a TCP proxy that can cut a
//! connection. Without a server the test is skipped with a message, unless
//! `HEXDISPATCH_REQUIRE_SERVICES` is set (CI), where it fails.

use std::io::Write as _;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::Connection;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use crate::helpers::SECRET;

fn required() -> bool {
    std::env::var_os("HEXDISPATCH_REQUIRE_SERVICES").is_some()
}

fn skip(what: &str, why: impl std::fmt::Display) -> Option<String> {
    assert!(
        !required(),
        "{what} is required here (HEXDISPATCH_REQUIRE_SERVICES) but {why}"
    );
    let line = format!(
        "SKIPPED: {what} unavailable ({why}); set HEXDISPATCH_TEST_{what}_URL to run this test"
    );
    // Straight to the process's stderr, which the harness does not capture, so a passing run
    // still says what it skipped.
    match std::fs::OpenOptions::new().append(true).open("/dev/stderr") {
        Ok(mut stderr) => {
            // One write, so lines of tests running in parallel do not interleave.
            let _ = stderr.write_all(format!("{line}\n").as_bytes());
        }
        Err(_) => eprintln!("{line}"),
    }
    None
}

/// A database of its own on the test PostgreSQL server, or `None` (skipped).
pub async fn postgres_database() -> Option<String> {
    let admin = std::env::var("HEXDISPATCH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => return skip("POSTGRES", e),
    };
    let name = format!("hx_{}", Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("database created");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}

/// Drops a database made by [`postgres_database`] (its connections are cut).
pub async fn drop_database(url: &str) {
    let admin = std::env::var("HEXDISPATCH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await else {
        return;
    };
    if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
    {
        eprintln!("could not drop test database {name}: {e}");
    }
}

/// The test Redis URL, or `None` (skipped).
pub async fn redis_url() -> Option<String> {
    let url = std::env::var("HEXDISPATCH_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = redis::Client::open(url.as_str()).expect("redis url");
    match client.get_multiplexed_async_connection().await {
        Ok(_) => Some(url),
        Err(e) => skip("REDIS", e),
    }
}

/// A free local port (bound and released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The engine binary running as a child process.
pub struct EngineProcess {
    child: Child,
    pub address: String,
}

impl EngineProcess {
    /// Starts `hexdispatch serve` with `env` overrides and waits for `/ready`.
    pub async fn start(dir: &std::path::Path, env: &[(&str, String)]) -> Self {
        Self::spawn(dir, env, Stdio::inherit(), free_port()).await
    }

    /// As [`EngineProcess::start`], on `port` (a restart where the apps already connect).
    pub async fn start_on(dir: &std::path::Path, env: &[(&str, String)], port: u16) -> Self {
        Self::spawn(dir, env, Stdio::inherit(), port).await
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// As [`EngineProcess::start`], with the engine's log written to `log`.
    pub async fn start_logging(
        dir: &std::path::Path,
        env: &[(&str, String)],
        log: &std::path::Path,
    ) -> Self {
        let file = std::fs::File::create(log).expect("log file");
        Self::spawn(dir, env, Stdio::from(file), free_port()).await
    }

    async fn spawn(
        dir: &std::path::Path,
        env: &[(&str, String)],
        stderr: Stdio,
        port: u16,
    ) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_hexdispatch"))
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .current_dir(dir)
            .env("HEXDISPATCH__AUTH__JWT_SECRET", SECRET)
            .env("HEXDISPATCH__LOG__LEVEL", "warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("engine binary starts");
        let engine = Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
        };
        engine.wait_ready().await;
        engine
    }

    async fn wait_ready(&self) {
        let client = awc::Client::default();
        for _ in 0..300 {
            if let Ok(res) = client.get(format!("{}/ready", self.address)).send().await
                && res.status().as_u16() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the engine at {} never became ready", self.address);
    }

    /// SIGTERM, then waits (at most `limit`) for the engine to exit by itself; returns whether it
    /// exited successfully in time.
    pub async fn terminate(mut self, limit: Duration) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM sent to {pid}");
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// `kill -9`.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL sent");
        let _ = self.child.wait();
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy to `target` that can cut every connection and refuse new ones, then let them in
/// again.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Proxy {
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(generation);
        let (target, flag, gen_tx) = (target.to_owned(), Arc::clone(&up), Arc::clone(&generation));
        actix_rt::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(Ordering::Acquire) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let mut cut = gen_tx.subscribe();
                actix_rt::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            up,
            generation,
        }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::Release);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::Release);
    }
}

/// The test RabbitMQ URL, or `None` (skipped).
pub async fn amqp_url() -> Option<String> {
    let url = std::env::var("HEXDISPATCH_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    match lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await {
        Ok(c) => {
            let _ = c.close(200, "probe".into()).await;
            Some(url)
        }
        Err(e) => skip("AMQP", e),
    }
}
