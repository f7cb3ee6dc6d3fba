//! Black-box tests of the engine: each starts the real server on port 0 and talks HTTP and
//! WebSocket to it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod accounts;
mod asyncapi;
mod authz;
mod broker;
mod browser;
mod cluster;
mod driver_socket;
mod drivers;
mod durability;
mod fuzz;
mod health;
mod helpers;
mod loadgen;
mod nearby;
mod openapi;
mod ops;
mod payments;
mod pricing;
mod reliability;
mod riders;
mod services;
mod simulate;
mod traces;
mod trip_input;
mod trips;
