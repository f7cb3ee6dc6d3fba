//! hexdispatch: a real-time ride-hailing dispatch engine.
pub mod geo;
