//! What the source and the sink share about talking to a broker: client
//! options (persistent session, credentials, packet limits), the words used
//! for rumqttc's errors, and the reconnect pause that never spins.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectReturnCode, ConnectionError, MqttOptions, QoS};
use tokio::sync::Notify;
use weir_config::Credentials;
use weir_connect::{Backoff, ConnectError, ConnectionState, ConnectorStatus};

/// Keep-alive interval: a half-open connection is noticed within about
/// one and a half of these.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Seconds rumqttc waits for TCP connect plus CONNACK.
pub(crate) const CONNECT_TIMEOUT_S: u64 = 5;

/// How long `open_*` waits for the first connection (and, for the source,
/// the SUBACK) before giving up.
pub(crate) const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// `host:port` as shown in messages (never with credentials).
pub(crate) fn address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Options for a client with a persistent session (`clean_session =
/// false`): the broker keeps its subscriptions and unacknowledged QoS 1
/// messages across reconnections, in both directions.
pub(crate) fn options(
    client_id: &str,
    host: &str,
    port: u16,
    credentials: &Credentials,
    max_packet_bytes: usize,
) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_clean_session(false)
        .set_keep_alive(KEEP_ALIVE)
        .set_max_packet_size(max_packet_bytes, max_packet_bytes);
    // MQTT 3.1.1 sends a password only with a user name; a token (for
    // brokers that take one) travels as the password.
    let secret = credentials
        .password
        .as_ref()
        .or(credentials.token.as_ref())
        .map(|s| s.expose());
    match (&credentials.user, secret) {
        (Some(user), secret) => {
            o.set_credentials(user.as_str(), secret.unwrap_or(""));
        }
        (None, Some(secret)) => {
            o.set_credentials("", secret);
        }
        (None, None) => {}
    }
    o
}

/// The QoS for a validated 0 or 1.
pub(crate) fn qos(q: u8) -> Result<QoS, ConnectError> {
    match q {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        q => Err(ConnectError::Config(format!(
            "MQTT QoS must be 0 or 1, got {q}"
        ))),
    }
}

/// rumqttc's error in plain words; a refused CONNACK says why.
pub(crate) fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                ConnectReturnCode::Success => "success (unexpected)",
                ConnectReturnCode::RefusedProtocolVersion => "unacceptable protocol version",
                ConnectReturnCode::BadClientId => "client identifier rejected",
                ConnectReturnCode::ServiceUnavailable => "server unavailable",
                ConnectReturnCode::BadUserNamePassword => "bad user name or password",
                ConnectReturnCode::NotAuthorized => "not authorized",
            };
            format!("the broker refused the connection: {why}")
        }
        ConnectionError::NetworkTimeout => {
            format!("no CONNACK within {CONNECT_TIMEOUT_S} s")
        }
        e => e.to_string(),
    }
}

/// A current-thread runtime for one client's event loop.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ConnectError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ConnectError::Io {
            context: "start the MQTT client's runtime".into(),
            source,
        })
}

/// Sleeps the backoff's next delay; false when `stop` was signalled
/// meanwhile. The pause is what keeps a reconnect loop from spinning while
/// the broker refuses connections at once.
pub(crate) async fn pause(backoff: &mut Backoff, stop: &Arc<Notify>) -> bool {
    let delay = backoff.next_delay();
    tokio::select! {
        _ = stop.notified() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// After a failed poll of a connection that was up once: reports the loss
/// (a warning when it was connected, a debug line per further failed
/// attempt) and pauses before the next poll reconnects. False when `stop`
/// was signalled meanwhile.
pub(crate) async fn reconnect_after(
    e: &ConnectionError,
    address: &str,
    status: &ConnectorStatus,
    backoff: &mut Backoff,
    stop: &Arc<Notify>,
) -> bool {
    if status.state() == ConnectionState::Connected {
        tracing::warn!(address = %address, error = %describe(e), "lost the connection to the MQTT broker; reconnecting");
        status.set(ConnectionState::Reconnecting);
    } else {
        tracing::debug!(address = %address, error = %describe(e), attempt = backoff.attempts(), "MQTT reconnect attempt failed");
    }
    pause(backoff, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_config::Secret;

    #[test]
    fn addresses_bracket_ipv6() {
        assert_eq!(address("127.0.0.1", 1883), "127.0.0.1:1883");
        assert_eq!(address("::1", 1883), "[::1]:1883");
    }

    #[test]
    fn credentials_reach_the_options() {
        let creds = Credentials {
            user: Some("u".into()),
            password: Some(Secret::new("p", "test")),
            token: None,
        };
        let o = options("c", "127.0.0.1", 1, &creds, 1024);
        let login = o.credentials().expect("credentials set");
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("u", "p")
        );
        assert!(!o.clean_session());
        let token_only = Credentials {
            user: None,
            password: None,
            token: Some(Secret::new("t", "test")),
        };
        let login = options("c", "h", 1, &token_only, 1024)
            .credentials()
            .unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("", "t")
        );
        assert!(options("c", "h", 1, &Credentials::default(), 1024)
            .credentials()
            .is_none());
    }

    #[test]
    fn refusals_are_worded() {
        let e = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        assert_eq!(
            describe(&e),
            "the broker refused the connection: not authorized"
        );
        assert!(qos(2).is_err());
    }
}
