//! What the source and the sink share: building librdkafka configurations
//! from weir's config, a client context that routes librdkafka's logs and
//! errors to `tracing` and to the connector's [`ConnectorStatus`], and the
//! wording of errors.
//!
//! librdkafka reconnects by itself; all a connector can do is notice. The
//! context turns "all brokers are down" into `Reconnecting` (with one warning
//! per loss, naming the brokers) and the connectors turn the next sign of
//! life (a message, a delivery, a metadata answer) back into `Connected`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use weir_config::Credentials;
use weir_connect::{ConnectError, ConnectionState, ConnectorStatus};

/// How long opening waits for the brokers to answer a metadata request.
/// An unreachable bootstrap fails the open after this long.
pub(crate) const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one offset or watermark request may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A configuration with the brokers, the SASL credentials (only those
/// given) and then the user's `properties` verbatim, so that a property
/// given in the pipeline file wins over weir's defaults set before this
/// call; settings weir's guarantees depend on are set after it by the
/// caller.
pub(crate) fn client_config(
    brokers: &str,
    defaults: &[(&str, &str)],
    properties: &[(String, String)],
    credentials: &Credentials,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    // rdkafka derives the level from the `log` crate's logger, which weir
    // does not install; librdkafka's own default is info.
    config.set_log_level(RDKafkaLogLevel::Info);
    config.set("bootstrap.servers", brokers);
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    if let Some(user) = &credentials.user {
        config.set("sasl.username", user);
    }
    if let Some(password) = &credentials.password {
        config.set("sasl.password", password.expose());
    }
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}

/// Words for a client that librdkafka refused to create. A bad property's
/// value is left out: it may be the password.
pub(crate) fn creation_error(what: &str, error: KafkaError) -> ConnectError {
    match error {
        KafkaError::ClientConfig(_, _, key, _) if key == "sasl.password" => {
            ConnectError::Config(format!("{what}: librdkafka rejects property sasl.password"))
        }
        KafkaError::ClientConfig(_, description, key, _value) => {
            ConnectError::Config(format!("{what}: property {key}: {description}"))
        }
        other => ConnectError::Config(format!("{what}: {other}")),
    }
}

/// The librdkafka context of every client weir creates: logs go to
/// `tracing`, connection loss to the status.
pub(crate) struct WeirContext {
    /// The connector's name and role, for logs (`kafka source "orders"`).
    pub(crate) label: String,
    /// The bootstrap servers, for logs and errors.
    pub(crate) brokers: String,
    pub(crate) status: Arc<ConnectorStatus>,
    /// librdkafka's last error-level log line: the client's own words for
    /// why an open failed (`Connect to ipv4#127.0.0.1:9 failed: Connection
    /// refused`). Written only on errors, so the lock costs nothing on the
    /// record path.
    last_error: Mutex<Option<String>>,
}

impl WeirContext {
    pub(crate) fn new(label: String, brokers: String, status: Arc<ConnectorStatus>) -> WeirContext {
        WeirContext {
            label,
            brokers,
            status,
            last_error: Mutex::new(None),
        }
    }

    /// librdkafka's last error-level log line, if any.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn remember_error(&self, message: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(message);
        }
    }

    /// A global error from librdkafka (from the error callback of a
    /// producer, or returned by a consumer's poll).
    pub(crate) fn client_error(&self, code: RDKafkaErrorCode, reason: &str) {
        match code {
            RDKafkaErrorCode::AllBrokersDown => self.connection_lost(reason),
            // One broker's connection failing is routine (librdkafka
            // reconnects); losing all of them is what counts.
            RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::Resolve => {
                tracing::debug!(connector = %self.label, brokers = %self.brokers, "kafka: {reason}");
                self.remember_error(reason.to_string());
            }
            _ => {
                tracing::warn!(connector = %self.label, brokers = %self.brokers, "kafka error {code:?}: {reason}");
                self.remember_error(reason.to_string());
            }
        }
    }

    /// All brokers unreachable: librdkafka keeps retrying with its own
    /// backoff (`reconnect.backoff.ms` up to `reconnect.backoff.max.ms`).
    pub(crate) fn connection_lost(&self, reason: &str) {
        // Not remembered: "1/1 brokers are down" would hide the reason
        // (the connection failure logged before it).
        if self.status.state() == ConnectionState::Connected {
            self.status.set(ConnectionState::Reconnecting);
            tracing::warn!(
                connector = %self.label,
                brokers = %self.brokers,
                "lost connection to kafka brokers {}: {reason}; librdkafka is reconnecting",
                self.brokers
            );
        }
    }

    /// A sign of life after a loss: back to `Connected`.
    pub(crate) fn connection_alive(&self) {
        if self.status.state() == ConnectionState::Reconnecting {
            self.status.set(ConnectionState::Connected);
            tracing::info!(
                connector = %self.label,
                brokers = %self.brokers,
                "reconnected to kafka brokers {}",
                self.brokers
            );
        }
    }
}

impl ClientContext for WeirContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                // Connection failures land here and repeat while a broker is
                // down; the connector's own warning marks the loss, so these
                // stay at debug and are kept for the open's error message.
                tracing::debug!(connector = %self.label, "librdkafka {facility}: {message}");
                self.remember_error(message.to_string());
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(connector = %self.label, "librdkafka {facility}: {message}")
            }
            RDKafkaLogLevel::Notice => {
                tracing::info!(connector = %self.label, "librdkafka {facility}: {message}")
            }
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                tracing::debug!(connector = %self.label, "librdkafka {facility}: {message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(code) => self.client_error(code, reason),
            None => tracing::warn!(connector = %self.label, "kafka error: {error}: {reason}"),
        }
    }
}

/// The error for brokers that did not answer at open: names the brokers
/// and carries librdkafka's words (its last logged error, which says why a
/// connection failed, and the request's error).
pub(crate) fn connect_error(context: &WeirContext, what: &str, error: &KafkaError) -> ConnectError {
    let message = match context.last_error() {
        Some(last) => format!("{what}: {error} (last client error: {last})"),
        None => format!("{what}: {error}"),
    };
    ConnectError::Connect {
        address: context.brokers.clone(),
        message,
    }
}

/// The number of partitions of `topic`, from a metadata request; a missing
/// topic is a configuration error naming it and the brokers.
pub(crate) fn partition_count(
    metadata: &Metadata,
    topic: &str,
    brokers: &str,
) -> Result<usize, ConnectError> {
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(missing_topic(topic, brokers));
    };
    match found.error() {
        None if !found.partitions().is_empty() => Ok(found.partitions().len()),
        None => Err(missing_topic(topic, brokers)),
        Some(code) => {
            let code = RDKafkaErrorCode::from(code);
            if code == RDKafkaErrorCode::UnknownTopicOrPartition
                || code == RDKafkaErrorCode::UnknownTopic
            {
                Err(missing_topic(topic, brokers))
            } else {
                Err(ConnectError::Broker {
                    address: brokers.to_string(),
                    message: format!("metadata of kafka topic {topic:?}: {code}"),
                })
            }
        }
    }
}

fn missing_topic(topic: &str, brokers: &str) -> ConnectError {
    ConnectError::Config(format!(
        "kafka topic {topic:?} does not exist on brokers {brokers}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_config::Secret;

    #[test]
    fn credentials_are_set_only_when_given_and_properties_win_over_defaults() {
        let properties = vec![("auto.offset.reset".to_string(), "latest".to_string())];
        let defaults = [("auto.offset.reset", "earliest"), ("client.id", "weir-x")];
        let none = client_config(
            "127.0.0.1:9092",
            &defaults,
            &properties,
            &Credentials::default(),
        );
        assert_eq!(none.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(none.get("sasl.username"), None);
        assert_eq!(none.get("sasl.password"), None);
        assert_eq!(none.get("auto.offset.reset"), Some("latest"));
        assert_eq!(none.get("client.id"), Some("weir-x"));

        let credentials = Credentials {
            user: Some("alice".to_string()),
            password: Some(Secret::new("hunter2", "environment variable PW")),
            token: None,
        };
        let with = client_config("127.0.0.1:9092", &defaults, &[], &credentials);
        assert_eq!(with.get("sasl.username"), Some("alice"));
        assert_eq!(with.get("sasl.password"), Some("hunter2"));
        // rdkafka's Debug of the configuration leaves the password out.
        assert!(!format!("{with:?}").contains("hunter2"));
    }
}
