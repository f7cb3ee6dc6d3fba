//! Adapters to the outside: the sqlx store (PostgreSQL, or the embedded SQLite default), the
//! writer that commits to it in batches, and the Redis snapshot of driver positions.

pub mod bus;
pub mod promotions;
pub mod ratings;
pub mod snapshot;
pub mod store;
pub mod users;
pub mod wallets;
pub mod writer;

pub use promotions::StoredPromotion;
pub use ratings::{NewRating, RatingSide, RatingSummary};
pub use snapshot::{Snapshot, SnapshotEntry};
pub use store::{Backend, DriverRow, OutboxRow, PositionRow, Store, StoreError, TripWrite, Write};
pub use wallets::{ChargeKind, ChargeOutcome, Earning, PaymentRow, RefundOutcome, RefundRow};
pub use writer::{Persistence, WriterGone};
