//! One daemon per state directory: an exclusive `flock` on `<state dir>/lock`.
//!
//! The kernel drops the lock when the holder dies, so a crashed daemon (even `kill -9`) never
//! blocks a restart. The holder's pid is written into the file for the error message and for
//! [`holder`], the probe `status` uses to say whether a daemon runs.
//!
//! Owns: the lock file, its pid, and the question "is this state directory held, by whom?".
//! Must not: wait for a lock, or hold the probe's shared lock beyond the probe.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name inside the state directory.
const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another immish-sync{holder} is already using the state directory {dir}; \
         stop it first (or point this one at another [state] dir)"
    )]
    Held { dir: PathBuf, holder: String },
    #[error("cannot create the lock file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held for the life of the daemon; dropping it releases the lock.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock or fails at once (never waits).
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let holder = match read_pid(&mut file) {
                    Some(pid) => format!(" (pid {pid})"),
                    None => String::new(),
                };
                return Err(LockError::Held {
                    dir: state_dir.to_path_buf(),
                    holder,
                });
            }
            return Err(io(err));
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(StateLock { _file: file })
    }
}

/// A daemon holding a state directory, as [`holder`] found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Holder {
    /// The pid it wrote into the lock file; `None` while it has not written it yet.
    pub pid: Option<u32>,
}

/// Whether a daemon holds the lock of `state_dir`, and its pid. `None` when the directory is
/// free (or was never used).
///
/// A shared, non-blocking probe: it fails only while a daemon holds the exclusive lock, and
/// is released before this returns, so it never keeps a daemon from starting.
pub fn holder(state_dir: &Path) -> Option<Holder> {
    let mut file = OpenOptions::new()
        .read(true)
        .open(state_dir.join(LOCK_FILE))
        .ok()?;
    // SAFETY: flock on a descriptor we own; the lock goes with `file` when it drops.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        return None;
    }
    Some(Holder {
        pid: read_pid(&mut file),
    })
}

/// The pid in the lock file, if it holds one.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_names_the_holder_and_leaves_the_lock_free_after() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()), None, "never used");
        let held = StateLock::acquire(dir.path()).unwrap();
        assert_eq!(
            holder(dir.path()),
            Some(Holder {
                pid: Some(std::process::id())
            })
        );
        drop(held);
        assert_eq!(holder(dir.path()), None, "released");
        // The probe itself must not keep the directory from its next daemon.
        let _again = StateLock::acquire(dir.path()).expect("the probe left it free");
    }

    #[test]
    fn a_second_lock_fails_at_once_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let err = StateLock::acquire(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("already using the state directory"), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        drop(first);
        StateLock::acquire(dir.path()).expect("free again after the holder is gone");
    }
}
