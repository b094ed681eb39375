//! A connector's connection state, shared with logs and metrics.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Where a connector stands with its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not yet connected.
    Connecting,
    /// Connected and working.
    Connected,
    /// Lost the connection; retrying with backoff.
    Reconnecting,
    /// Closed after the input ended or a final error.
    Closed,
}

impl ConnectionState {
    /// The state's name in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Reconnecting => "reconnecting",
            ConnectionState::Closed => "closed",
        }
    }

    fn from_u8(v: u8) -> ConnectionState {
        match v {
            1 => ConnectionState::Connected,
            2 => ConnectionState::Reconnecting,
            3 => ConnectionState::Closed,
            _ => ConnectionState::Connecting,
        }
    }
}

/// A connector's state and how often it has reconnected; updated by the
/// connector, read by anyone.
#[derive(Debug, Default)]
pub struct ConnectorStatus {
    state: AtomicU8,
    reconnects: AtomicU64,
}

impl ConnectorStatus {
    /// The current state.
    pub fn state(&self) -> ConnectionState {
        ConnectionState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Sets the state; entering `Connected` from `Reconnecting` counts a
    /// reconnection.
    pub fn set(&self, state: ConnectionState) {
        let v = match state {
            ConnectionState::Connecting => 0,
            ConnectionState::Connected => 1,
            ConnectionState::Reconnecting => 2,
            ConnectionState::Closed => 3,
        };
        let before = self.state.swap(v, Ordering::Relaxed);
        if v == 1 && before == 2 {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Completed reconnections since start.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }
}
