//! The local-directory backend: each object is a file, made durable with
//! fsync and atomic with rename.
//!
//! A checkpoint is written into `.tmp-cp-<id>-<nonce>`, fsynced, renamed
//! to its final name and the directory fsynced; the manifest is written
//! into `MANIFEST.tmp`, fsynced and renamed over `MANIFEST` (the commit
//! point). A crash leaves at most temporary files, which
//! [`CheckpointStore::open`](crate::CheckpointStore::open) deletes. The
//! manifest's version is a checksum of its bytes: ids only grow and every
//! commit changes the bytes, so a changed manifest is a changed checksum.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::backend::{Backend, Head, PutNew, Swap, Version};
use crate::error::io_err;
use crate::{CheckpointError, Fault, MANIFEST, MANIFEST_TMP, TMP_PREFIX};

#[derive(Debug)]
pub(crate) struct DirBackend {
    dir: PathBuf,
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(io_err("fsync directory", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn version_of(bytes: &[u8]) -> Version {
    Version {
        e_tag: Some(format!("{:08x}-{}", crc32fast::hash(bytes), bytes.len())),
        version: None,
    }
}

impl DirBackend {
    /// Creates the directory if needed and checks that it is writable.
    pub(crate) fn open(dir: &Path) -> Result<Self, CheckpointError> {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let probe = dir.join(format!("{TMP_PREFIX}probe-{}", std::process::id()));
        File::create(&probe).map_err(io_err("write in directory", dir))?;
        fs::remove_file(&probe).map_err(io_err("remove", &probe))?;
        Ok(DirBackend {
            dir: dir.to_path_buf(),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Backend for DirBackend {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn get(&self, name: &str) -> Result<Option<(Vec<u8>, Version)>, CheckpointError> {
        let path = self.path(name);
        match fs::read(&path) {
            Ok(bytes) => {
                let v = version_of(&bytes);
                Ok(Some((bytes, v)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CheckpointError::Io {
                op: "read",
                path,
                source,
            }),
        }
    }

    fn head(&self, name: &str, len: usize) -> Result<Option<Head>, CheckpointError> {
        let path = self.path(name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    op: "open",
                    path,
                    source,
                })
            }
        };
        let meta = file.metadata().map_err(io_err("stat", &path))?;
        let mut bytes = Vec::new();
        file.take(len as u64)
            .read_to_end(&mut bytes)
            .map_err(io_err("read", &path))?;
        Ok(Some(Head {
            bytes,
            size: meta.len(),
            modified: meta.modified().ok(),
        }))
    }

    fn put_new(
        &self,
        name: &str,
        bytes: &[u8],
        fault: Option<Fault>,
    ) -> Result<PutNew, CheckpointError> {
        // 1. temp file, fsynced.
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let stem = name.strip_suffix(".ckpt").unwrap_or(name);
        let tmp = self.dir.join(format!("{TMP_PREFIX}{stem}-{nonce}"));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        let written = match fault {
            Some(Fault::CrashMidFile(n)) => {
                let n = n.min(bytes.len());
                file.write_all(&bytes[..n]).map_err(io_err("write", &tmp))?;
                return Err(CheckpointError::SimulatedCrash(Fault::CrashMidFile(n)));
            }
            Some(Fault::DiskFullAfter(n)) if n < bytes.len() => file
                .write_all(&bytes[..n])
                .and_then(|_| Err(io::Error::other("No space left on device (simulated)"))),
            _ => file.write_all(bytes),
        }
        .and_then(|_| file.sync_all());
        if let Err(source) = written {
            drop(file);
            if let Err(e) = fs::remove_file(&tmp) {
                tracing::warn!(path = %tmp.display(), error = %e, "cannot remove temp file after failed write");
            }
            return Err(CheckpointError::Io {
                op: "write",
                path: tmp,
                source,
            });
        }
        drop(file);
        if fault == Some(Fault::CrashBeforeRename) {
            return Err(CheckpointError::SimulatedCrash(Fault::CrashBeforeRename));
        }
        // 2. rename into place (replacing a file a crashed write left).
        let path = self.path(name);
        fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
        sync_dir(&self.dir)?;
        Ok(PutNew::Created)
    }

    fn swap_manifest(
        &self,
        bytes: &[u8],
        expected: Option<&Version>,
        fault: Option<Fault>,
    ) -> Result<Swap, CheckpointError> {
        // One process owns a directory and the store serializes its
        // writes, so checking the version and then renaming suffices to
        // notice another store (or a person) having changed the manifest.
        let current = self.get(MANIFEST)?.map(|(_, v)| v);
        if current.as_ref() != expected {
            return Ok(Swap::Conflict);
        }
        let mtmp = self.dir.join(MANIFEST_TMP);
        let mut mfile = File::create(&mtmp).map_err(io_err("create", &mtmp))?;
        mfile
            .write_all(bytes)
            .and_then(|_| mfile.sync_all())
            .map_err(io_err("write", &mtmp))?;
        drop(mfile);
        if fault == Some(Fault::CrashMidManifest) {
            return Err(CheckpointError::SimulatedCrash(Fault::CrashMidManifest));
        }
        let mpath = self.path(MANIFEST);
        fs::rename(&mtmp, &mpath).map_err(io_err("rename into place", &mpath))?;
        sync_dir(&self.dir)?;
        Ok(Swap::Done(version_of(bytes)))
    }

    fn list(&self) -> Result<Vec<String>, CheckpointError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn delete(&self, names: &[String]) -> Result<(), CheckpointError> {
        if names.is_empty() {
            return Ok(());
        }
        for name in names {
            let path = self.path(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CheckpointError::Io {
                        op: "remove",
                        path,
                        source,
                    })
                }
            }
        }
        sync_dir(&self.dir)
    }
}
