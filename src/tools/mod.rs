//! What drives the engine from outside, one function per `hexdispatch` subcommand other than
//! `serve`: the account and token tools of [`admin`] (migrate, create-operator, seed-drivers,
//! token), the load generator ([`loadgen`]) and the city simulator ([`simulate`]). The engine
//! itself never calls these.

pub mod admin;
pub mod loadgen;
pub mod simulate;
