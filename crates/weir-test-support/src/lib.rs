//! What weir's tests share, so each helper exists once: pipelines (the
//! fraud example with overrides), child processes killed on drop, free
//! ports, waiting for a condition, owned output rows for sink tests,
//! private brokers to kill and restart, fraud-v1 reference checks and a
//! small tmpfs for full-disk tests, and a private S3 server (moto).
//!
//! Only tests use it (it is a dev-dependency of the other crates and is
//! not published). Helpers panic with a message saying what failed, as a
//! test assertion does.

#![deny(missing_docs)]

pub mod brokers;
pub mod fraud;
pub mod moto;
pub mod names;
pub mod net;
pub mod pipelines;
pub mod process;
pub mod rows;
pub mod tmpfs;
pub mod wait;

use std::path::{Path, PathBuf};

/// The repository's root directory (where `examples/` is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}
