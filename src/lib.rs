//! hexdispatch: a real-time ride-hailing dispatch engine.
//!
//! Drivers stream positions over WebSockets into driver actors, which keep an in-memory H3 index
//! (sharded over cell actors) current; nearby queries fan out to the shards a circle touches and
//! merge exact answers; trip actors run the offer / expand-radius loop and drive each trip through
//! its lifecycle; persistence adapters write behind. [`engine::Engine::start`] is what `main`, the
//! tests and the benchmarks run.
//!
//! The parts, and what each may import (arrows point one way; `tests/layout.rs` checks them):
//!
//! - [`geo`] — pure: coordinates, H3 cells, the spatial index. Imports no other part.
//! - [`dispatch`] — pure domain: driver status and position, roles, vehicle types, money, the trip
//!   lifecycle, matching policy, pricing, surge, promotions, ledger rules. Imports [`geo`] only.
//! - [`persistence`] — adapters: the sqlx store, users, wallets, the batching writer, the
//!   RabbitMQ/in-process bus, the Redis snapshot. Imports [`dispatch`] and the leaves.
//! - [`actors`] — the running system: cell, driver, trip, notification actors, the payment desk,
//!   the shared handle set [`actors::Core`], trip use cases, recovery, the live-trip store, the
//!   market. Imports [`persistence`], [`dispatch`], [`geo`], [`config`].
//! - [`http`] — the REST and WebSocket edge on actix-web / actix-ws: server state (keys,
//!   password hashing, limiters), routes, the caller extractor, input parsing, error mapping,
//!   sessions. Imports [`actors`] and below.
//! - [`engine`] — the composition root. Imports everything; nothing imports it.
//! - [`tools`] — what drives the engine from outside (`hexdispatch migrate`, `create-operator`,
//!   `seed-drivers`, `token`). Imports [`http`] and below; the engine never uses it.
//! - Shared by the parts above `dispatch`: [`config`] (settings; it imports [`dispatch`] and
//!   [`geo`] for the domain types its values parse into, never the reverse), [`clock`] (epoch
//!   ms), [`metrics`] (the metric catalogue), [`telemetry`] (log output). `geo` and `dispatch` use
//!   none of them: they are given settings as domain values and times as arguments.
//!
//! Every file, in one hop, is in the README's code map.

pub mod actors;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod engine;
pub mod geo;
pub mod http;
pub mod metrics;
pub mod persistence;
pub mod telemetry;
pub mod tools;

pub use actors::Core;
pub use engine::{Engine, EngineHandle};
