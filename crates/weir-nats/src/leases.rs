//! Membership and task ownership of a split pipeline in a JetStream
//! key-value bucket, for workers on different machines that share a NATS
//! server.
//!
//! The bucket (`weir_tasks_<pipeline>`) keeps one revision per key and
//! drops entries older than the lease time (`max_age`). A member puts
//! `members.<id>` (how many tasks it holds) every third of the lease time,
//! so the keys present are the live members. A task is owned through
//! `tasks.<n>`: taken with a create (which succeeds only when the key is
//! absent: never set, released, or expired), kept by updating it at the
//! revision this owner last wrote (compare-and-set), released by deleting
//! it at that revision. A member whose update is refused, or that could
//! not renew for a whole lease time, has lost the task and stops it. The
//! fencing epoch is the revision of the create: the bucket's sequence,
//! higher for every new owner. Nothing here needs more than what
//! nats-server 2.9 offers (key-value buckets since 2.6, compare-and-set
//! by expected subject sequence); the server's version is checked.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{CreateErrorKind, Store, UpdateErrorKind};
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures_util::StreamExt;
use weir_tasks::{Lease, LeaseError, MemberInfo, Ownership};

use crate::{connect, Connection, REQUEST_TIMEOUT};

/// The oldest server version whose key-value buckets this relies on.
const MIN_SERVER: (u64, u64, u64) = (2, 6, 2);

/// A held task in the bucket.
#[derive(Debug)]
pub struct NatsLease {
    task: u32,
    epoch: u64,
    /// The revision this owner last wrote.
    revision: u64,
    /// When it was last written.
    renewed: Instant,
}

impl Lease for NatsLease {
    fn task(&self) -> u32 {
        self.task
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// A member of a split pipeline's workers, through a NATS server.
pub struct NatsLeases {
    conn: Connection,
    kv: Store,
    id: String,
    ttl: Duration,
    /// When `members.<id>` was last put, and with what count.
    beat: Option<(Instant, u32)>,
    held: u32,
}

fn backend(what: impl Into<String>) -> impl FnOnce(String) -> LeaseError {
    let what = what.into();
    move |reason| LeaseError::Backend { what, reason }
}

fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u64>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// The bucket of pipeline `pipeline`: its name with what bucket names
/// cannot hold replaced.
pub fn bucket_name(pipeline: &str) -> String {
    let safe: String = pipeline
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("weir_tasks_{safe}")
}

impl NatsLeases {
    /// Joins the workers of `pipeline` on the servers of `source` as
    /// member `id`, with leases that last `ttl` without renewal.
    pub fn join(
        source: &weir_config::NatsSource,
        pipeline: &str,
        id: &str,
        ttl: Duration,
    ) -> Result<NatsLeases, LeaseError> {
        let conn = connect("leases", &source.servers, &source.credentials).map_err(|e| {
            LeaseError::Backend {
                what: format!("connecting to NATS {}", source.servers.join(",")),
                reason: e.to_string(),
            }
        })?;
        let version = conn.client.server_info().version;
        match parse_version(&version) {
            Some(v) if v >= MIN_SERVER => {}
            _ => {
                return Err(LeaseError::Backend {
                    what: format!("NATS server at {}", conn.address),
                    reason: format!(
                        "version {version:?} has no key-value buckets with compare-and-set; \
                         task ownership needs nats-server {}.{}.{} or newer",
                        MIN_SERVER.0, MIN_SERVER.1, MIN_SERVER.2
                    ),
                })
            }
        }
        let bucket = bucket_name(pipeline);
        let js = {
            let _entered = conn.rt.enter();
            async_nats::jetstream::new(conn.client.clone())
        };
        let kv = conn
            .rt
            .block_on(async {
                tokio::time::timeout(REQUEST_TIMEOUT, async {
                    if let Ok(kv) = js.get_key_value(&bucket).await {
                        return Ok(kv);
                    }
                    // The bucket's stream, as a key-value bucket is made
                    // (async-nats' `create_key_value` first asks for
                    // account information whose answer from 2.9 servers
                    // it cannot read).
                    js.get_or_create_stream(stream::Config {
                        name: format!("KV_{bucket}"),
                        description: Some(format!("task ownership of weir pipeline {pipeline}")),
                        subjects: vec![format!("$KV.{bucket}.>")],
                        max_messages_per_subject: 1,
                        max_age: ttl,
                        duplicate_window: ttl,
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        discard: stream::DiscardPolicy::New,
                        storage: stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                    js.get_key_value(&bucket).await.map_err(|e| e.to_string())
                })
                .await
                .map_err(|_| "timed out".to_string())?
            })
            .map_err(backend(format!("opening key-value bucket {bucket}")))?;
        let mut leases = NatsLeases {
            conn,
            kv,
            id: id.to_string(),
            ttl,
            beat: None,
            held: 0,
        };
        leases.heartbeat(true)?;
        Ok(leases)
    }

    fn block<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, LeaseError> {
        self.conn
            .rt
            .block_on(async {
                tokio::time::timeout(REQUEST_TIMEOUT, f)
                    .await
                    .map_err(|_| "timed out".to_string())?
            })
            .map_err(backend(format!("{what} (bucket {})", self.kv.name)))
    }

    /// Puts `members.<id>` when a third of the lease time has passed or the
    /// count changed (`force`).
    fn heartbeat(&mut self, force: bool) -> Result<(), LeaseError> {
        let due = match self.beat {
            None => true,
            Some((at, held)) => force || held != self.held || at.elapsed() >= self.ttl / 3,
        };
        if !due {
            return Ok(());
        }
        let key = format!("members.{}", self.id);
        let value = Bytes::from(format!("held={}", self.held));
        let kv = self.kv.clone();
        self.block("announcing this member", async move {
            kv.put(key, value).await.map_err(|e| e.to_string())
        })?;
        self.beat = Some((Instant::now(), self.held));
        Ok(())
    }
}

impl Ownership for NatsLeases {
    type Lease = NatsLease;

    fn id(&self) -> &str {
        &self.id
    }

    fn members(&mut self) -> Result<Vec<MemberInfo>, LeaseError> {
        self.heartbeat(false)?;
        let kv = self.kv.clone();
        let mut members = self.block("listing members", async move {
            let mut keys = kv.keys().await.map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            while let Some(key) = keys.next().await {
                let key = key.map_err(|e| e.to_string())?;
                let Some(id) = key.strip_prefix("members.") else {
                    continue;
                };
                let held = kv
                    .get(&key)
                    .await
                    .map_err(|e| e.to_string())?
                    .and_then(|v| {
                        std::str::from_utf8(&v)
                            .ok()?
                            .strip_prefix("held=")?
                            .parse()
                            .ok()
                    });
                // Gone between the listing and the read: expired.
                if let Some(held) = held {
                    out.push(MemberInfo {
                        id: id.to_string(),
                        held,
                    });
                }
            }
            Ok(out)
        })?;
        if !members.iter().any(|m| m.id == self.id) {
            members.push(MemberInfo {
                id: self.id.clone(),
                held: self.held,
            });
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(members)
    }

    fn publish_held(&mut self, held: u32) -> Result<(), LeaseError> {
        self.held = held;
        self.heartbeat(true)
    }

    fn try_acquire(&mut self, task: u32) -> Result<Option<NatsLease>, LeaseError> {
        let kv = self.kv.clone();
        let key = format!("tasks.{task}");
        let value = Bytes::from(format!("owner={}", self.id));
        let created = self.block("taking a task", async move {
            match kv.create(&key, value).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })?;
        Ok(created.map(|revision| NatsLease {
            task,
            epoch: revision,
            revision,
            renewed: Instant::now(),
        }))
    }

    fn renew(&mut self, lease: &mut NatsLease) -> Result<bool, LeaseError> {
        if lease.renewed.elapsed() < self.ttl / 3 {
            return Ok(true);
        }
        let kv = self.kv.clone();
        let key = format!("tasks.{}", lease.task);
        let value = Bytes::from(format!("owner={}", self.id));
        let revision = lease.revision;
        let wait = REQUEST_TIMEOUT.min(self.ttl / 3);
        let updated = self.conn.rt.block_on(async move {
            tokio::time::timeout(wait, kv.update(&key, value, revision)).await
        });
        match updated {
            Ok(Ok(revision)) => {
                lease.revision = revision;
                lease.renewed = Instant::now();
                Ok(true)
            }
            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            // The server did not answer: the lease holds until its time
            // is up, as the others see it.
            Ok(Err(e)) => {
                tracing::warn!(task = lease.task, error = %e, "cannot renew a task's lease");
                Ok(lease.renewed.elapsed() < self.ttl)
            }
            Err(_) => Ok(lease.renewed.elapsed() < self.ttl),
        }
    }

    fn release(&mut self, lease: NatsLease) {
        let kv = self.kv.clone();
        let key = format!("tasks.{}", lease.task);
        let _ = self.block("releasing a task", async move {
            kv.delete_expect_revision(&key, Some(lease.revision))
                .await
                .map_err(|e| e.to_string())
        });
    }

    fn holder(&mut self, task: u32) -> Option<String> {
        let kv = self.kv.clone();
        let value = self
            .block("reading a task's owner", async move {
                kv.get(format!("tasks.{task}"))
                    .await
                    .map_err(|e| e.to_string())
            })
            .ok()??;
        std::str::from_utf8(&value)
            .ok()?
            .strip_prefix("owner=")
            .map(str::to_string)
    }
}

impl Drop for NatsLeases {
    fn drop(&mut self) {
        // Leave at once instead of when the entry expires.
        let kv = self.kv.clone();
        let key = format!("members.{}", self.id);
        let _ = self.block("leaving", async move {
            kv.delete(&key).await.map_err(|e| e.to_string())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_bucket_names() {
        assert_eq!(parse_version("2.9.25"), Some((2, 9, 25)));
        assert_eq!(parse_version("v2.10.1-beta"), Some((2, 10, 1)));
        assert!(parse_version("2.9.25").unwrap() >= MIN_SERVER);
        assert!(parse_version("2.6.1").unwrap() < MIN_SERVER);
        assert_eq!(parse_version("x"), None);
        assert_eq!(bucket_name("fraud-v1.eu"), "weir_tasks_fraud-v1_eu");
    }
}
