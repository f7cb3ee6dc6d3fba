//! hexdispatch: a real-time ride-hailing dispatch engine.
//!
//! Drivers stream positions over WebSockets into driver actors, which keep an in-memory H3 index
//! (sharded over cell actors) current; nearby queries fan out to the shards a circle touches and
//! merge exact answers. [`engine::Engine::start`] is what `main`, the tests and the benchmarks run.
//!
//! - [`geo`] and [`dispatch`]: pure domain (coordinates, H3 cells, the spatial index, statuses);
//! - [`actors`]: cell, driver and trip actors, registries, the matching board;
//! - [`market`], [`trips`]: pricing with surge and promotions; the trip store and views;
//! - [`http`]: the REST and WebSocket edge;
//! - [`config`], [`auth`], [`metrics`]: settings, tokens, the metrics catalogue.

pub mod actors;
pub mod auth;
pub mod clock;
pub mod config;
pub mod directory;
pub mod dispatch;
pub mod engine;
pub mod geo;
pub mod http;
pub mod identity;
pub mod market;
pub mod metrics;
pub mod payments;
pub mod persistence;
pub mod protocol;
pub mod telemetry;
pub mod trips;

pub use engine::{Core, Engine, EngineHandle};
