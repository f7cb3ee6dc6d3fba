//! WebSocket sessions on actix-ws. A session is not the driver: it parses and validates frames and
//! forwards them to the driver's actor, which outlives the socket.

pub mod driver;
pub mod frames;
