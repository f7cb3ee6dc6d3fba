//! What keeps one failure from spreading. A panic while an actor handles one message must not take
//! down other drivers, trips or cells, nor leave the actor's mailbox dead behind an address that
//! others still hold. Handlers of the trip and cell actors run inside [`guarded`]: a panic is
//! caught, logged and counted (`hexdispatch_actor_restarts_total`), the caller gets a refusal,
//! and the actor rebuilds itself in place from what it owns — a trip from its last stored state,
//! a cell from its drivers' positions (each driver places itself again). The address stays the
//! same, so nobody has to find the actor anew.

use std::panic::{AssertUnwindSafe, catch_unwind};

use metrics::counter;

use crate::metrics::ACTOR_RESTARTS;

/// Runs `handle`; `None` if it panicked (logged and counted under `actor`).
pub fn guarded<R>(actor: &'static str, handle: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(handle)) {
        Ok(result) => Some(result),
        Err(cause) => {
            let cause = cause
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| cause.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".to_owned());
            tracing::error!(actor, cause, "handler panicked; rebuilding the actor");
            counter!(ACTOR_RESTARTS, "actor" => actor).increment(1);
            None
        }
    }
}

/// Panics inside the receiving actor's handler (tests of the supervision only).
#[cfg(test)]
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Crash;
