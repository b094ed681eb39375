//! Loopback ports for servers a test starts, or for addresses where
//! nothing must listen.

use std::net::TcpListener;

/// A loopback port nothing listens on at the time of asking (bound, then
/// released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
