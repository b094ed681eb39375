//! Lock files in a directory: who is a member, who holds which task, and
//! each task's fencing epoch.
//!
//! ```text
//! <root>/members/<member id>.lock   held (flock) by its live member;
//!                                   says how many tasks it holds
//! <root>/tasks/task-<n>.lock        held by task n's owner; says the
//!                                   owner and the epoch it took
//! ```
//!
//! A member's file is locked under a temporary name and then renamed into
//! place, so nobody ever sees it unlocked while its member lives; a file
//! whose lock anyone can take belongs to a member that is gone, and is
//! removed. The epoch of a task only grows: each new owner writes the one
//! after the last, so a store that records it can refuse an older owner.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What can go wrong with the lock files.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS's error.
        source: std::io::Error,
    },
    /// Another live process is a member under the same id.
    #[error("member id {id:?} is in use by a live process (lock file {})", path.display())]
    IdInUse {
        /// The id.
        id: String,
        /// Its lock file.
        path: PathBuf,
    },
    /// An id with characters a file name cannot safely have.
    #[error("member id {0:?} must be 1 to 100 of A-Z a-z 0-9 . _ - and not start with '.'")]
    BadId(String),
    /// The broker or store that keeps ownership failed.
    #[error("{what}: {reason}")]
    Backend {
        /// What was being done.
        what: String,
        /// The backend's error.
        reason: String,
    },
}

/// A held task.
pub trait Lease {
    /// The task's number.
    fn task(&self) -> u32;
    /// The fencing epoch its owner took: higher for every new owner.
    fn epoch(&self) -> u64;
}

/// Where membership and task ownership live: lock files in a local
/// directory ([`LocalLeases`]), or a broker's key-value bucket.
pub trait Ownership {
    /// A held task.
    type Lease: Lease;
    /// This member's id.
    fn id(&self) -> &str;
    /// The live members (this one included), sorted by id.
    fn members(&mut self) -> Result<Vec<MemberInfo>, LeaseError>;
    /// Says how many tasks this member holds.
    fn publish_held(&mut self, held: u32) -> Result<(), LeaseError>;
    /// Takes task `task` if nobody holds it, with the next epoch.
    fn try_acquire(&mut self, task: u32) -> Result<Option<Self::Lease>, LeaseError>;
    /// Keeps a held task's lease alive: `false` when it was lost (another
    /// member may own the task now, and this one must stop it).
    fn renew(&mut self, lease: &mut Self::Lease) -> Result<bool, LeaseError>;
    /// Gives a task up.
    fn release(&mut self, lease: Self::Lease);
    /// Who holds task `task` (or held it last), when known.
    fn holder(&mut self, task: u32) -> Option<String>;
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LeaseError + 'a {
    move |source| LeaseError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A live member, as its lock file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its id.
    pub id: String,
    /// How many tasks it said it holds.
    pub held: u32,
}

/// Membership and task locks in one directory, for one member.
#[derive(Debug)]
pub struct LocalLeases {
    root: PathBuf,
    id: String,
    /// Locked for as long as this member lives.
    member: File,
}

/// An exclusively held task; dropping it releases the task.
#[derive(Debug)]
pub struct TaskLease {
    task: u32,
    epoch: u64,
    _file: File,
}

impl Lease for TaskLease {
    fn task(&self) -> u32 {
        self.task
    }

    /// 1 for the first owner ever.
    fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// The kernel's locks: a lease lasts as long as its process, so renewing
/// never fails.
impl Ownership for LocalLeases {
    type Lease = TaskLease;

    fn id(&self) -> &str {
        LocalLeases::id(self)
    }

    fn members(&mut self) -> Result<Vec<MemberInfo>, LeaseError> {
        LocalLeases::members(self)
    }

    fn publish_held(&mut self, held: u32) -> Result<(), LeaseError> {
        LocalLeases::publish_held(self, held)
    }

    fn try_acquire(&mut self, task: u32) -> Result<Option<TaskLease>, LeaseError> {
        LocalLeases::try_acquire(self, task)
    }

    fn renew(&mut self, _: &mut TaskLease) -> Result<bool, LeaseError> {
        Ok(true)
    }

    fn release(&mut self, lease: TaskLease) {
        drop(lease);
    }

    fn holder(&mut self, task: u32) -> Option<String> {
        LocalLeases::holder(self, task)
    }
}

fn check_id(id: &str) -> Result<(), LeaseError> {
    let ok = (1..=100).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(LeaseError::BadId(id.to_string()))
    }
}

fn rewrite(file: &mut File, path: &Path, text: &str) -> Result<(), LeaseError> {
    file.set_len(0).map_err(io_err("truncate", path))?;
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("seek", path))?;
    file.write_all(text.as_bytes())
        .map_err(io_err("write", path))?;
    file.sync_data().map_err(io_err("fsync", path))
}

fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

impl LocalLeases {
    /// Joins the members of `root` (created if missing) under `id`.
    pub fn join(root: &Path, id: &str) -> Result<LocalLeases, LeaseError> {
        check_id(id)?;
        for sub in ["members", "tasks"] {
            let d = root.join(sub);
            std::fs::create_dir_all(&d).map_err(io_err("create directory", &d))?;
        }
        let path = root.join("members").join(format!("{id}.lock"));
        if let Ok(existing) = File::open(&path) {
            match existing.try_lock() {
                Err(TryLockError::WouldBlock) => {
                    return Err(LeaseError::IdInUse {
                        id: id.to_string(),
                        path,
                    })
                }
                Err(TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
                Ok(()) => {} // a member gone: its file is replaced below
            }
        }
        let tmp = root
            .join("members")
            .join(format!(".{id}.{}.tmp", std::process::id()));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        file.lock().map_err(io_err("lock", &tmp))?;
        rewrite(&mut file, &tmp, "held=0\n")?;
        std::fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
        Ok(LocalLeases {
            root: root.to_path_buf(),
            id: id.to_string(),
            member: file,
        })
    }

    /// This member's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Says how many tasks this member holds (others read it in
    /// [`members`](Self::members)).
    pub fn publish_held(&mut self, held: u32) -> Result<(), LeaseError> {
        let path = self.root.join("members").join(format!("{}.lock", self.id));
        rewrite(&mut self.member, &path, &format!("held={held}\n"))
    }

    /// The live members (this one included), sorted by id; the files of
    /// members that are gone are removed.
    pub fn members(&self) -> Result<Vec<MemberInfo>, LeaseError> {
        let dir = self.root.join("members");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err("list directory", &dir))? {
            let entry = entry.map_err(io_err("list directory", &dir))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".lock")) else {
                continue;
            };
            if id.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("open", &path)(e)),
            };
            let alive = id == self.id
                || match file.try_lock() {
                    Ok(()) => false,
                    Err(TryLockError::WouldBlock) => true,
                    Err(TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
                };
            if !alive {
                tracing::info!(member = id, "a member is gone; removing its lock file");
                // Still locked by us, so no new member of that id can be
                // between the check and the removal (it renames its own
                // file into place, which this does not touch).
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let held = field(&text, "held")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            out.push(MemberInfo {
                id: id.to_string(),
                held,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Takes task `task` if nobody holds it: its lease, with the next
    /// epoch; `None` when another member holds it.
    pub fn try_acquire(&self, task: u32) -> Result<Option<TaskLease>, LeaseError> {
        let path = self.task_path(task);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
        }
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(io_err("read", &path))?;
        let epoch = field(&text, "epoch")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        rewrite(
            &mut file,
            &path,
            &format!(
                "epoch={epoch} owner={} pid={}\n",
                self.id,
                std::process::id()
            ),
        )?;
        Ok(Some(TaskLease {
            task,
            epoch,
            _file: file,
        }))
    }

    /// Who holds task `task` (or held it last), as its lock file says.
    pub fn holder(&self, task: u32) -> Option<String> {
        let text = std::fs::read_to_string(self.task_path(task)).ok()?;
        field(&text, "owner").map(str::to_string)
    }

    fn task_path(&self, task: u32) -> PathBuf {
        self.root.join("tasks").join(format!("task-{task}.lock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_has_one_owner_and_each_owner_a_higher_epoch() {
        let dir = tempfile::tempdir().expect("dir");
        let a = LocalLeases::join(dir.path(), "a").expect("a");
        let b = LocalLeases::join(dir.path(), "b").expect("b");
        let lease = a.try_acquire(3).expect("acquire").expect("free");
        assert_eq!(lease.epoch(), 1);
        assert!(b.try_acquire(3).expect("acquire").is_none());
        assert_eq!(b.holder(3).as_deref(), Some("a"));
        drop(lease);
        let lease = b.try_acquire(3).expect("acquire").expect("free again");
        assert_eq!((lease.task(), lease.epoch()), (3, 2));
        assert_eq!(a.holder(3).as_deref(), Some("b"));
    }

    #[test]
    fn members_see_each_other_and_forget_the_gone() {
        let dir = tempfile::tempdir().expect("dir");
        let mut a = LocalLeases::join(dir.path(), "a").expect("a");
        let b = LocalLeases::join(dir.path(), "b").expect("b");
        assert!(matches!(
            LocalLeases::join(dir.path(), "b"),
            Err(LeaseError::IdInUse { .. })
        ));
        assert!(matches!(
            LocalLeases::join(dir.path(), "../x"),
            Err(LeaseError::BadId(_))
        ));
        a.publish_held(2).expect("publish");
        let ids = |l: &LocalLeases| -> Vec<(String, u32)> {
            l.members()
                .expect("members")
                .into_iter()
                .map(|m| (m.id, m.held))
                .collect()
        };
        assert_eq!(ids(&b), vec![("a".into(), 2), ("b".into(), 0)]);
        drop(a); // the process of `a` ends: its lock goes with it
        assert_eq!(ids(&b), vec![("b".into(), 0)]);
        assert!(!dir.path().join("members/a.lock").exists());
        // The id can be used again.
        let _a = LocalLeases::join(dir.path(), "a").expect("a again");
        assert_eq!(ids(&b).len(), 2);
    }
}
