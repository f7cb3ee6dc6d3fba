//! The actors: cell actors own shards of the driver index, driver actors own drivers, trip actors
//! run trips; the shard map routes between drivers and cells, the registries find an actor by id,
//! the matching board lets available drivers find matching trips, the rider hub reaches riders'
//! sockets.
//!
//! Data flows one way: session → driver actor → cell actor; queries go from the caller straight to
//! the cell actors (one hop) and back; trips offer through driver actors, which arbitrate.

pub mod board;
pub mod cell;
pub mod driver;
pub mod notification;
pub mod registry;
pub mod riders;
pub mod shards;
pub mod trip;
