//! The object-storage backend: checkpoints in any `object_store` backend
//! (S3, GCS, Azure Blob, in-memory), fenced with conditional puts.
//!
//! Object puts are atomic, so there are no temporary objects: a
//! checkpoint is put with `PutMode::Create` under its final name (two
//! writers cannot both write one id), and the manifest with
//! `PutMode::Create` the first time and `PutMode::Update` (If-Match on its
//! ETag) afterwards, so a writer whose manifest is stale fails instead of
//! overwriting a newer one. On S3 this needs conditional writes
//! (`S3ConditionalPut::ETagMatch`, object_store's default; AWS S3 has had
//! both If-None-Match and If-Match on PutObject since 2024).
//!
//! The engine's threads are synchronous: the backend owns a
//! current-thread tokio runtime and blocks on each request.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{
    Error as OsError, GetOptions, GetRange, ObjectStore, ObjectStoreExt, ObjectStoreScheme,
    PutMode, PutOptions, PutPayload, UpdateVersion,
};

use crate::backend::{Backend, Head, PutNew, Swap, Version};
use crate::{object_url_for_messages, CheckpointError, Fault};

#[derive(Debug)]
pub(crate) struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The store's URL for messages, without credentials.
    name: String,
    rt: tokio::runtime::Runtime,
}

fn location_err(location: &str, reason: impl ToString) -> CheckpointError {
    CheckpointError::Location {
        location: location.to_string(),
        reason: reason.to_string(),
    }
}

/// rustls needs a process-wide crypto provider when reqwest is built
/// without one (the workspace uses ring, not aws-lc-rs); installing it
/// twice is harmless.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl ObjectBackend {
    /// The backend for `url`, configured from the environment.
    pub(crate) fn from_url(url: &str) -> Result<Self, CheckpointError> {
        let shown = object_url_for_messages(url);
        // object_store's messages may quote the URL as given, with user
        // info or a query: only the shown form reaches a message.
        let redact = |e: &dyn std::fmt::Display| e.to_string().replace(url, &shown);
        let parsed = url::Url::parse(url).map_err(|e| location_err(&shown, redact(&e)))?;
        let (scheme, path) = ObjectStoreScheme::parse(&parsed).map_err(|e| {
            location_err(&shown, format!("not an object-store URL: {}", redact(&e)))
        })?;
        install_crypto_provider();
        let built = |e: OsError| location_err(&shown, redact(&e));
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::AmazonS3 => Arc::new(
                AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(built)?,
            ),
            ObjectStoreScheme::GoogleCloudStorage => Arc::new(
                GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(built)?,
            ),
            ObjectStoreScheme::MicrosoftAzure => Arc::new(
                MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(built)?,
            ),
            ObjectStoreScheme::Memory => Arc::new(InMemory::new()),
            _ => {
                return Err(location_err(
                    &shown,
                    "unsupported scheme; use s3://, gs://, az:// (or their https forms), \
                     memory:/// or file:///",
                ))
            }
        };
        let prefix = path.to_string();
        Self::new(store, &shown, &prefix)
    }

    /// The backend for objects under `prefix` in `store`.
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        name: &str,
        prefix: &str,
    ) -> Result<Self, CheckpointError> {
        let prefix = ObjectPath::parse(prefix).map_err(|e| location_err(name, e))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| location_err(name, format!("cannot start its I/O runtime: {e}")))?;
        Ok(ObjectBackend {
            store,
            prefix,
            name: name.trim_end_matches('/').to_string(),
            rt,
        })
    }

    fn object(&self, name: &str) -> ObjectPath {
        self.prefix.clone().join(name)
    }

    /// Runs `f` on the backend's runtime; from inside another runtime (a
    /// caller in async code) on a scoped thread, since a runtime cannot
    /// block inside another.
    fn block_on<F>(&self, f: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(|| self.rt.block_on(f))
                    .join()
                    .expect("object-store request thread panicked")
            })
        } else {
            self.rt.block_on(f)
        }
    }

    fn err(&self, op: &'static str, name: &str, e: OsError) -> CheckpointError {
        CheckpointError::Object {
            op,
            store: self.name.clone(),
            object: name.to_string(),
            reason: e.to_string(),
        }
    }
}

fn version(e_tag: Option<String>, version: Option<String>) -> Version {
    // An ETag identifies a version on its own; the object version only
    // where a store has no ETag, so a GET and a PUT of one version compare
    // equal whatever else the store reports.
    match e_tag {
        Some(e_tag) => Version {
            e_tag: Some(e_tag),
            version: None,
        },
        None => Version {
            e_tag: None,
            version,
        },
    }
}

impl Backend for ObjectBackend {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("{}/{name}", self.name))
    }

    fn get(&self, name: &str) -> Result<Option<(Vec<u8>, Version)>, CheckpointError> {
        let location = self.object(name);
        self.block_on(async {
            match self.store.get(&location).await {
                Ok(r) => {
                    let v = version(r.meta.e_tag.clone(), r.meta.version.clone());
                    let bytes = r.bytes().await.map_err(|e| self.err("read", name, e))?;
                    Ok(Some((bytes.to_vec(), v)))
                }
                Err(OsError::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err("read", name, e)),
            }
        })
    }

    fn head(&self, name: &str, len: usize) -> Result<Option<Head>, CheckpointError> {
        let location = self.object(name);
        let ranged = self.block_on(async {
            let options = GetOptions {
                range: Some(GetRange::Bounded(0..len as u64)),
                ..Default::default()
            };
            match self.store.get_opts(&location, options).await {
                Ok(r) => {
                    let size = r.meta.size;
                    let modified = Some(r.meta.last_modified.into());
                    let bytes = r.bytes().await.map_err(|e| self.err("read", name, e))?;
                    Ok(Some(Some(Head {
                        bytes: bytes.to_vec(),
                        size,
                        modified,
                    })))
                }
                Err(OsError::NotFound { .. }) => Ok(Some(None)),
                // A range the object cannot satisfy (it is empty, so
                // damaged): see below.
                Err(_) => Ok(None),
            }
        })?;
        match ranged {
            Some(head) => Ok(head),
            None => Ok(self.get(name)?.map(|(mut bytes, _)| {
                let size = bytes.len() as u64;
                bytes.truncate(len);
                Head {
                    bytes,
                    size,
                    modified: None,
                }
            })),
        }
    }

    fn put_new(
        &self,
        name: &str,
        bytes: &[u8],
        fault: Option<Fault>,
    ) -> Result<PutNew, CheckpointError> {
        // A put is atomic: a crash or a full store anywhere in it leaves
        // nothing under the name.
        match fault {
            Some(f @ (Fault::CrashMidFile(_) | Fault::CrashBeforeRename)) => {
                return Err(CheckpointError::SimulatedCrash(f))
            }
            Some(Fault::DiskFullAfter(n)) if n < bytes.len() => {
                return Err(CheckpointError::Object {
                    op: "write",
                    store: self.name.clone(),
                    object: name.to_string(),
                    reason: "no space left (simulated)".into(),
                })
            }
            _ => {}
        }
        let location = self.object(name);
        let payload = PutPayload::from(bytes.to_vec());
        let options = PutOptions::from(PutMode::Create);
        self.block_on(async {
            match self.store.put_opts(&location, payload, options).await {
                Ok(_) => Ok(PutNew::Created),
                Err(OsError::AlreadyExists { .. } | OsError::Precondition { .. }) => {
                    Ok(PutNew::Exists)
                }
                Err(e) => Err(self.err("write", name, e)),
            }
        })
    }

    fn swap_manifest(
        &self,
        bytes: &[u8],
        expected: Option<&Version>,
        fault: Option<Fault>,
    ) -> Result<Swap, CheckpointError> {
        if fault == Some(Fault::CrashMidManifest) {
            return Err(CheckpointError::SimulatedCrash(Fault::CrashMidManifest));
        }
        let location = self.object(crate::MANIFEST);
        let mode = match expected {
            None => PutMode::Create,
            Some(v) => PutMode::Update(UpdateVersion {
                e_tag: v.e_tag.clone(),
                version: v.version.clone(),
            }),
        };
        let payload = PutPayload::from(bytes.to_vec());
        self.block_on(async {
            match self
                .store
                .put_opts(&location, payload, PutOptions::from(mode))
                .await
            {
                Ok(r) => Ok(Swap::Done(version(r.e_tag, r.version))),
                Err(
                    OsError::AlreadyExists { .. }
                    | OsError::Precondition { .. }
                    | OsError::NotFound { .. },
                ) => Ok(Swap::Conflict),
                Err(e) => Err(self.err("commit", crate::MANIFEST, e)),
            }
        })
    }

    fn list(&self) -> Result<Vec<String>, CheckpointError> {
        self.block_on(async {
            let listed = self
                .store
                .list_with_delimiter(Some(&self.prefix))
                .await
                .map_err(|e| self.err("list", "", e))?;
            Ok(listed
                .objects
                .into_iter()
                .filter_map(|m| m.location.filename().map(str::to_string))
                .collect())
        })
    }

    fn delete(&self, names: &[String]) -> Result<(), CheckpointError> {
        self.block_on(async {
            for name in names {
                match self.store.delete(&self.object(name)).await {
                    Ok(()) | Err(OsError::NotFound { .. }) => {}
                    Err(e) => return Err(self.err("delete", name, e)),
                }
            }
            Ok(())
        })
    }
}
