//! The running system. Actors, one per file with its messages next to it: cell actors own shards
//! of the driver index ([`cell`]), driver actors own drivers ([`driver`]), trip actors run trips
//! ([`trip`]), the notification actor fans trip events out ([`notification`]); the payment desk
//! settles completed trips ([`payment`]). Around them, what they share: the handle set
//! ([`core`]), the trip use cases ([`use_cases`]: request, drive), start-up [`recovery`], the
//! live-trip store ([`trip_store`]), the [`market`] (tariffs, surge, promotion uses), the shard
//! map ([`shards`]), registries, driver profiles ([`directory`]), the matching [`board`], rider
//! sockets ([`riders`]), what clients are shown ([`protocol`]) and what keeps one failure from
//! spreading ([`supervision`]).
//!
//! Data flows one way: session → driver actor → cell actor; queries go from the caller straight to
//! the cell actors (one hop) and back; trips offer through driver actors, which arbitrate. Nothing
//! here knows HTTP.

pub mod batcher;
pub mod board;
pub mod cell;
pub mod core;
pub mod directory;
pub mod driver;
pub mod market;
pub mod notification;
pub mod payment;
pub mod peers;
pub mod protocol;
pub mod recovery;
pub mod registry;
pub mod riders;
pub mod shards;
pub mod supervision;
#[cfg(test)]
pub(crate) mod test_support;
pub mod trip;
pub mod trip_store;
pub mod use_cases;

pub use self::core::{Core, CoreInner, DriverLookupError};
pub use use_cases::{DriveError, RequestError, Requested, TripRequest};
