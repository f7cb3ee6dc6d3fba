//! Starts the real engine in-process on port 0 and speaks HTTP and WebSocket to it.

use std::time::Duration;

use actix_codec::Framed;
use awc::BoxedSocket;
use awc::ws::{Codec, Frame, Message};
use futures_util::{SinkExt, StreamExt};
use hexdispatch::config::Settings;
use hexdispatch::dispatch::Role;
use hexdispatch::http::tokens::{Claims, JwtKeys};
use hexdispatch::{Core, Engine, EngineHandle};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use secrecy::SecretString;
use serde_json::Value;
use uuid::Uuid;

pub const SECRET: &str = "integration-test-secret-0123456789";

pub struct TestApp {
    pub address: String,
    pub ws_address: String,
    pub core: Core,
    pub handle: EngineHandle,
    keys: JwtKeys,
    db_file: std::path::PathBuf,
    client: awc::Client,
}

/// Starts an engine with test settings, adjusted by `tune`.
pub async fn spawn_app_with(tune: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = Settings::default();
    settings.http.host = "127.0.0.1".into();
    settings.http.port = 0;
    settings.http.workers = 1;
    settings.http.shutdown_timeout_s = 1;
    settings.geo.cell_arbiters = 2;
    settings.auth.jwt_secret = SecretString::from(SECRET);
    // Cheap password hashes keep the tests fast; production uses config.toml's cost.
    settings.auth.argon2_memory_kib = 1_024;
    settings.auth.argon2_iterations = 1;
    // Each engine gets its own SQLite file unless the test chose a database.
    let db_file = std::env::temp_dir().join(format!("hexdispatch-test-{}.db", Uuid::now_v7()));
    settings.database.url = Some(format!("sqlite://{}?mode=rwc", db_file.display()));
    tune(&mut settings);
    let engine = Engine::start(settings).await.expect("engine starts");
    let port = engine.port();
    let core = engine.core().clone();
    let handle = engine.handle();
    actix_rt::spawn(engine.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        ws_address: format!("ws://127.0.0.1:{port}"),
        core,
        handle,
        keys: JwtKeys::new(&SecretString::from(SECRET)),
        db_file,
        client: awc::Client::builder()
            .connector(awc::Connector::new().limit(0))
            .timeout(Duration::from_secs(10))
            .finish(),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.core.shutdown();
        remove_sqlite(&self.db_file);
    }
}

/// Removes a SQLite database file with its WAL and shared-memory files.
pub fn remove_sqlite(file: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut path = file.to_path_buf().into_os_string();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
}

/// A token with arbitrary claims, signed with `secret`.
pub fn sign(claims: &Claims, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The four kinds of bad credentials, each with its expected name.
pub fn bad_tokens(sub: Uuid, role: Role) -> Vec<(&'static str, Option<String>)> {
    let claims = |exp: u64| Claims {
        sub,
        role,
        exp,
        iat: now_s() - 10,
        jti: Uuid::now_v7(),
        vehicle_type: None,
    };
    vec![
        ("missing token", None),
        ("garbage token", Some("not-a-jwt".into())),
        (
            "expired token",
            Some(sign(&claims(now_s() - 3_600), SECRET)),
        ),
        (
            "token signed with another secret",
            Some(sign(
                &claims(now_s() + 3_600),
                "some-other-secret-entirely-123",
            )),
        ),
    ]
}

pub struct Response {
    pub status: u16,
    pub body: Value,
    pub headers: awc::http::header::HeaderMap,
}

impl TestApp {
    pub fn token(&self, role: Role, sub: Uuid) -> String {
        self.keys.issue(sub, role, None, 3_600).unwrap()
    }

    pub fn driver_token(&self, sub: Uuid, vehicle_type: &str) -> String {
        self.keys
            .issue(sub, role_driver(), Some(vehicle_type.into()), 3_600)
            .unwrap()
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> Response {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let mut res = match body {
            Some(body) => {
                req.insert_header(("content-type", "application/json"))
                    .send_body(body)
                    .await
            }
            None => req.send().await,
        }
        .expect("request sent");
        let bytes = res.body().limit(16 * 1024 * 1024).await.expect("body read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Response {
            status: res.status().as_u16(),
            body,
            headers: res.headers().clone(),
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.request("GET", path, token, None).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: &str) -> Response {
        self.request("PUT", path, token, Some(body.to_string()))
            .await
    }

    pub async fn set_status(&self, driver: Uuid, token: &str, status: &str) -> Response {
        self.put(
            &format!("/api/drivers/{driver}/status"),
            Some(token),
            &format!(r#"{{"status":"{status}"}}"#),
        )
        .await
    }

    pub async fn nearby(&self, token: &str, query: &str) -> Response {
        self.get(&format!("/api/locations/nearby?{query}"), Some(token))
            .await
    }

    /// Opens `/ws/driver` with the token in the Authorization header.
    pub async fn driver_socket(&self, token: &str) -> Socket {
        let (_, framed) = self
            .client
            .ws(format!("{}/ws/driver", self.ws_address))
            .bearer_auth(token)
            .max_frame_size(1 << 20)
            .connect()
            .await
            .expect("websocket connects");
        Socket { framed }
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &str) -> Response {
        self.request("POST", path, token, Some(body.to_string()))
            .await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Response {
        self.request("DELETE", path, token, None).await
    }

    /// `POST /api/trips` from `origin` to `destination`.
    pub async fn request_trip(
        &self,
        rider_token: &str,
        origin: (f64, f64),
        destination: (f64, f64),
    ) -> Response {
        self.post(
            "/api/trips",
            Some(rider_token),
            &serde_json::json!({
                "origin": {"lat": origin.0, "lng": origin.1},
                "destination": {"lat": destination.0, "lng": destination.1},
            })
            .to_string(),
        )
        .await
    }

    /// A driver with an open socket, online at `at`, its session frames consumed.
    pub async fn online_driver(&self, at: (f64, f64)) -> (Uuid, Socket) {
        let driver = Uuid::now_v7();
        let mut ws = self
            .driver_socket(&self.driver_token(driver, "economy"))
            .await;
        ws.recv_json().await;
        ws.send(serde_json::json!({"type": "location", "lat": at.0, "lng": at.1}))
            .await;
        ws.send(serde_json::json!({"type": "status", "status": "online", "ref": "online"}))
            .await;
        let reply = ws.recv_json().await;
        assert_eq!(reply["status"], "online", "{reply}");
        (driver, ws)
    }

    /// Opens `/ws/rider` with the token in the Authorization header; consumes its session frame.
    pub async fn rider_socket(&self, token: &str) -> Socket {
        let (_, framed) = self
            .client
            .ws(format!("{}/ws/rider", self.ws_address))
            .bearer_auth(token)
            .max_frame_size(1 << 20)
            .connect()
            .await
            .expect("websocket connects");
        let mut socket = Socket { framed };
        let hello = socket.recv_json().await;
        assert_eq!(hello["type"], "session", "{hello}");
        socket
    }

    /// Opens `/ws/rider` and returns the raw socket (first frame unread).
    pub async fn raw_rider_socket(&self, token: &str) -> Socket {
        let (_, framed) = self
            .client
            .ws(format!("{}/ws/rider?token={token}", self.ws_address))
            .max_frame_size(1 << 20)
            .connect()
            .await
            .expect("websocket connects");
        Socket { framed }
    }

    /// Opens `/ws/driver` with an optional token in the `token` query parameter.
    /// Opens a socket at `path_and_query` (the token in the query).
    pub async fn socket_at(&self, path_and_query: &str) -> Socket {
        let (_, framed) = self
            .client
            .ws(format!("{}{path_and_query}", self.ws_address))
            .max_frame_size(1 << 20)
            .connect()
            .await
            .expect("websocket connects");
        Socket { framed }
    }

    pub async fn driver_socket_query(&self, token: Option<&str>) -> Socket {
        let url = match token {
            Some(t) => format!("{}/ws/driver?token={t}", self.ws_address),
            None => format!("{}/ws/driver", self.ws_address),
        };
        let (_, framed) = self
            .client
            .ws(url)
            .max_frame_size(1 << 20)
            .connect()
            .await
            .expect("websocket connects");
        Socket { framed }
    }
}

fn role_driver() -> Role {
    Role::Driver
}

/// What a socket received.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    Json(Value),
    Close(Option<u16>, String),
    Ended,
}

pub struct Socket {
    framed: Framed<BoxedSocket, Codec>,
}

impl From<Framed<BoxedSocket, Codec>> for Socket {
    fn from(framed: Framed<BoxedSocket, Codec>) -> Self {
        Self { framed }
    }
}

impl Socket {
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.framed
            .send(Message::Text(text.into().into()))
            .await
            .expect("frame sent");
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.framed
            .send(Message::Binary(bytes.into()))
            .await
            .expect("frame sent");
    }

    pub async fn close(mut self) {
        let _ = self.framed.send(Message::Close(None)).await;
    }

    /// The next text frame or close, answering pings, within 5 s.
    pub async fn recv(&mut self) -> Incoming {
        self.recv_within(Duration::from_secs(5), true).await
    }

    pub async fn recv_within(&mut self, limit: Duration, answer_pings: bool) -> Incoming {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.framed.next()).await;
            match next {
                Err(_) => panic!("no frame within {limit:?}"),
                Ok(None) => return Incoming::Ended,
                Ok(Some(Err(_))) => return Incoming::Ended,
                Ok(Some(Ok(frame))) => match frame {
                    Frame::Text(bytes) => {
                        return Incoming::Json(
                            serde_json::from_slice(&bytes).expect("server sends JSON"),
                        );
                    }
                    Frame::Close(reason) => {
                        return Incoming::Close(
                            reason.as_ref().map(|r| u16::from(r.code)),
                            reason.and_then(|r| r.description).unwrap_or_default(),
                        );
                    }
                    Frame::Ping(bytes) if answer_pings => {
                        self.framed
                            .send(Message::Pong(bytes))
                            .await
                            .expect("pong sent");
                    }
                    _ => {}
                },
            }
        }
    }

    /// The next JSON frame; panics on a close.
    pub async fn recv_json(&mut self) -> Value {
        match self.recv().await {
            Incoming::Json(v) => v,
            other => panic!("expected a JSON frame, got {other:?}"),
        }
    }

    /// The next JSON frame of type `kind`, skipping others (within 5 s each).
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        for _ in 0..200 {
            let frame = self.recv_json().await;
            if frame["type"] == kind {
                return frame;
            }
        }
        panic!("no {kind} frame among 200");
    }

    /// Whether a JSON frame of type `kind` arrives within `limit` (other frames are skipped).
    pub async fn gets_within(&mut self, kind: &str, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            match tokio::time::timeout(left, self.framed.next()).await {
                Err(_) | Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Frame::Text(bytes)))) => {
                    let v: Value = serde_json::from_slice(&bytes).expect("server sends JSON");
                    if v["type"] == kind {
                        return Some(v);
                    }
                }
                Ok(Some(Ok(Frame::Ping(bytes)))) => {
                    let _ = self.framed.send(Message::Pong(bytes)).await;
                }
                Ok(Some(Ok(Frame::Close(_)))) => return None,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// The next JSON frame within `limit`, or `None` on silence or close.
    pub async fn gets_within_any(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.framed.next()).await {
                Err(_) | Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Frame::Text(bytes)))) => {
                    return Some(serde_json::from_slice(&bytes).expect("server sends JSON"));
                }
                Ok(Some(Ok(Frame::Ping(bytes)))) => {
                    let _ = self.framed.send(Message::Pong(bytes)).await;
                }
                Ok(Some(Ok(Frame::Close(_)))) => return None,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Waits for the close frame and returns its code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.recv().await {
                Incoming::Close(code, _) => return code,
                Incoming::Ended => return None,
                Incoming::Json(_) => {}
            }
        }
    }
}
