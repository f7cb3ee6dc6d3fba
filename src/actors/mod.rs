//! The actors: cell actors own shards of the driver index, driver actors own drivers, the shard
//! map routes between them, and the registry finds a driver's actor by id.
//!
//! Data flows one way: session → driver actor → cell actor; queries go from the caller straight to
//! the cell actors (one hop) and back.

pub mod cell;
pub mod driver;
pub mod registry;
pub mod shards;
