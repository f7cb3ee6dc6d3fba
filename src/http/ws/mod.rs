//! WebSocket sessions on actix-ws. A session is not the driver (or rider): it parses and validates
//! frames and forwards them to the actors, which outlive the socket, and writes what they push.

pub mod driver;
pub mod frames;
pub mod rider;
