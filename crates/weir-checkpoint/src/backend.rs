//! Where a store's objects live, behind one small interface.
//!
//! The store's logic — the manifest as commit point, ids, pruning, manifest
//! recovery, fencing — is written once in the crate root over [`Backend`];
//! a backend only stores named byte strings. Two exist: a local directory
//! ([`crate::local`], fsync and rename) and, with the `object-store`
//! feature, any `object_store` backend (`crate::object`: S3, GCS, Azure,
//! in-memory). What a backend must guarantee:
//!
//! - a checkpoint appears under its final name only complete (the
//!   directory renames a synced temp file; an object put is atomic), and
//!   in an object store only if no object of that name exists;
//! - the manifest is replaced only if it is still the version the caller
//!   read ([`Backend::swap_manifest`]): the commit point and the fence.

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::{CheckpointError, Fault};

/// One version of the manifest: an ETag and object version from an object
/// store, or a checksum of the local file's bytes. Opaque to the store,
/// compared for equality only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

/// The start of an object and what is known about it.
#[derive(Debug)]
pub(crate) struct Head {
    /// Up to the requested number of bytes from the start.
    pub bytes: Vec<u8>,
    /// The whole object's size.
    pub size: u64,
    /// Its modification time, when known.
    pub modified: Option<SystemTime>,
}

/// The outcome of [`Backend::put_new`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PutNew {
    Created,
    /// An object of that name already existed; nothing was written.
    #[cfg_attr(not(feature = "object-store"), allow(dead_code))]
    Exists,
}

/// The outcome of [`Backend::swap_manifest`].
#[derive(Debug)]
pub(crate) enum Swap {
    /// The new manifest is committed; its version.
    Done(Version),
    /// The manifest was not the expected version; nothing was written.
    Conflict,
}

pub(crate) trait Backend: Send + Sync + fmt::Debug {
    /// The location for messages: a directory or a URL without secrets.
    fn describe(&self) -> String;

    /// The path (or URL as a path) of object `name`, for reports.
    fn path(&self, name: &str) -> PathBuf;

    /// The object's bytes and version, or `None` when it does not exist.
    fn get(&self, name: &str) -> Result<Option<(Vec<u8>, Version)>, CheckpointError>;

    /// The first `len` bytes of the object, or `None` when it does not
    /// exist.
    fn head(&self, name: &str, len: usize) -> Result<Option<Head>, CheckpointError>;

    /// Writes a checkpoint object durably under `name`. The directory
    /// replaces a file left by a crashed write (one process owns a
    /// directory); an object store writes only if `name` is absent.
    fn put_new(
        &self,
        name: &str,
        bytes: &[u8],
        fault: Option<Fault>,
    ) -> Result<PutNew, CheckpointError>;

    /// Writes the manifest if its current version is `expected` (`None`:
    /// if there is no manifest). The commit point.
    fn swap_manifest(
        &self,
        bytes: &[u8],
        expected: Option<&Version>,
        fault: Option<Fault>,
    ) -> Result<Swap, CheckpointError>;

    /// The names of every object in the store, unsorted.
    fn list(&self) -> Result<Vec<String>, CheckpointError>;

    /// Deletes these objects (a missing one is not an error) and makes the
    /// deletion durable.
    fn delete(&self, names: &[String]) -> Result<(), CheckpointError>;
}
