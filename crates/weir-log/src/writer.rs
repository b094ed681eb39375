//! One writer per stream, across processes and within one.
//!
//! A partition's writer keeps the next offset and the end of the active
//! segment in memory. Two writers of one stream — `weir dlq replay` while
//! `weir ingest` appends, two pipelines with one log sink — would each hand
//! out the same offsets and write over each other's frames. So opening a
//! stream for writing ([`Log::stream`](crate::Log::stream)) takes an
//! exclusive OS lock (`flock`, through [`File::try_lock`]) on
//! `<stream>/writer.lock` before anything is read or repaired, and the
//! [`Stream`] holds it for its lifetime. The OS releases the lock when the
//! process ends, however it ends, so a `kill -9` leaves no stale lock. The
//! holder writes who it is into the file (pid, program, start time), so a
//! refused writer gets [`LogError::Locked`] naming it. Readers
//! ([`TailReader`](crate::TailReader)) never take the lock.
//!
//! Within one process every [`Log`](crate::Log) that opens a stream gets
//! the same [`Stream`] (a process-wide table of open streams keyed by the
//! stream's canonical directory), so several components of one process —
//! an ingest server and the tests that drive it, a log sink and a
//! dead-letter writer on one stream — share one writer instead of
//! refusing each other.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{io_err, LogError, Result, Stream, StreamConfig};

/// The lock file's name in a stream's directory.
pub const LOCK_FILE: &str = "writer.lock";

/// The process that holds a stream's writer lock, as it recorded itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// Its program: the executable's file name and the subcommand words
    /// after it (`weir ingest`, `weir dlq replay`).
    pub program: String,
    /// When it took the lock.
    pub since: SystemTime,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (pid {}, since {})",
            self.program,
            self.pid,
            utc(self.since)
        )
    }
}

impl Holder {
    fn this_process() -> Holder {
        Holder {
            pid: std::process::id(),
            program: program_name(std::env::args_os().map(|a| a.to_string_lossy().into_owned())),
            since: SystemTime::now(),
        }
    }

    fn encode(&self) -> String {
        let since = self
            .since
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        format!(
            "pid {}\nprogram {}\nsince {since}\n",
            self.pid, self.program
        )
    }

    /// The holder a lock file names; `None` when it names none (the
    /// holder has not written it yet, or it is not from this crate).
    fn decode(text: &str) -> Option<Holder> {
        let (mut pid, mut program, mut since) = (None, None, None);
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("pid", v)) => pid = v.parse().ok(),
                Some(("program", v)) => program = Some(v.to_string()),
                Some(("since", v)) => {
                    since = v.parse().ok().map(|s| UNIX_EPOCH + Duration::from_secs(s))
                }
                _ => {}
            }
        }
        Some(Holder {
            pid: pid?,
            program: program?,
            since: since?,
        })
    }
}

/// The executable's file name and up to two following arguments that are
/// plain words (a subcommand, not an option, path or value that might be a
/// secret).
fn program_name(mut args: impl Iterator<Item = String>) -> String {
    let Some(exe) = args.next() else {
        return "unknown".to_string();
    };
    let mut name = Path::new(&exe)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let word = |a: &str| {
        a.len() <= 32
            && a.starts_with(|c: char| c.is_ascii_lowercase())
            && a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
    };
    for a in args.take_while(|a| word(a)).take(2) {
        name.push(' ');
        name.push_str(&a);
    }
    name.replace(['\n', '\r'], " ")
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Who holds a lock, for [`LogError::Locked`]'s message.
pub(crate) fn describe(holder: &Option<Holder>) -> String {
    match holder {
        Some(h) => h.to_string(),
        None => "another process (it has not recorded which)".to_string(),
    }
}

/// The held lock: the open lock file (closing it releases the lock).
#[derive(Debug)]
pub(crate) struct WriterLock {
    _file: File,
}

impl WriterLock {
    /// Takes the writer lock of the stream `name` in `dir` (its directory,
    /// which exists), or says who holds it.
    pub(crate) fn acquire(dir: &Path, name: &str) -> Result<WriterLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // Best effort: an unreadable record still refuses the writer.
                let _ = file.read_to_string(&mut text);
                return Err(LogError::Locked {
                    stream: name.to_string(),
                    dir: dir.parent().unwrap_or(dir).to_path_buf(),
                    holder: Holder::decode(&text),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
        }
        let record = Holder::this_process().encode();
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(record.as_bytes()))
            .map_err(io_err("write lock file", &path))?;
        Ok(WriterLock { _file: file })
    }
}

/// The streams open for writing in this process, by canonical directory.
/// An entry whose stream is gone (its `Weak` dead) belongs to a stream
/// still closing: its [`Registration`], the last thing it drops, removes
/// the entry once the partitions are closed and the lock is released.
static OPEN: Mutex<Option<HashMap<PathBuf, Weak<Stream>>>> = Mutex::new(None);

fn open_table() -> MutexGuard<'static, Option<HashMap<PathBuf, Weak<Stream>>>> {
    OPEN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes its stream's entry from the table of open streams when the
/// stream is dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    key: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(table) = open_table().as_mut() {
            // The entry is this stream's: no other is added while it is there.
            table.remove(&self.key);
        }
    }
}

/// The stream in `dir` open for writing in this process, or a newly opened
/// one (by `open`, which takes the writer lock).
pub(crate) fn open_shared(
    dir: &Path,
    name: &str,
    config: &StreamConfig,
    open: impl FnOnce() -> Result<Stream>,
) -> Result<Arc<Stream>> {
    std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let key = dir
        .canonicalize()
        .map_err(io_err("resolve directory", dir))?;
    let mut open = Some(open);
    loop {
        let mut table = open_table();
        let entry = table
            .get_or_insert_with(HashMap::new)
            .get(&key)
            .map(Weak::upgrade);
        match entry {
            Some(Some(stream)) => {
                // Dropping `stream` may close it; never under the table lock.
                drop(table);
                if stream.config() != config {
                    return Err(LogError::InvalidConfig {
                        stream: name.to_string(),
                        reason: "already open in this process with a different configuration"
                            .to_string(),
                    });
                }
                return Ok(stream);
            }
            Some(None) => {
                // Another thread is closing it; wait until it has.
                drop(table);
                std::thread::sleep(Duration::from_millis(1));
            }
            None => {
                let open = open.take().expect("opened once");
                let mut stream = open()?;
                stream.registration = Some(Registration { key: key.clone() });
                let stream = Arc::new(stream);
                table
                    .get_or_insert_with(HashMap::new)
                    .insert(key, Arc::downgrade(&stream));
                return Ok(stream);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_names_keep_subcommands_only() {
        let name = |args: &[&str]| program_name(args.iter().map(|s| s.to_string()));
        assert_eq!(
            name(&["/usr/bin/weir", "ingest", "--token", "x"]),
            "weir ingest"
        );
        assert_eq!(
            name(&["weir", "dlq", "replay", "--to", "transactions"]),
            "weir dlq replay"
        );
        assert_eq!(name(&["./weir", "run", "p.toml"]), "weir run");
        assert_eq!(name(&["weir", "a", "b", "c"]), "weir a b");
        assert_eq!(name(&["/opt/app"]), "app");
        assert_eq!(name(&[]), "unknown");
        assert_eq!(name(&["/"]), "unknown");
    }

    #[test]
    fn holders_round_trip_and_print() {
        let h = Holder {
            pid: 4242,
            program: "weir ingest".into(),
            since: UNIX_EPOCH + Duration::from_secs(1_714_563_000),
        };
        assert_eq!(Holder::decode(&h.encode()), Some(h.clone()));
        assert_eq!(
            h.to_string(),
            "weir ingest (pid 4242, since 2024-05-01T11:30:00Z)"
        );
        assert_eq!(Holder::decode(""), None);
        assert_eq!(Holder::decode("pid x\nprogram p\nsince 1\n"), None);
    }

    #[test]
    fn utc_dates() {
        let at = |s: u64| utc(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
