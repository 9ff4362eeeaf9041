//! The environments of a data directory, `envs/<name>/`: each is built once in a
//! directory named by its stamp and never changed after it is ready, so a rebuild goes
//! beside the environments running sessions use. Every process using one holds a shared
//! lock on its `in-use.lock`; an environment is removed only by a setup that can take
//! that lock exclusively.

use crate::error::{io_error, PyenvError};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The files of one environment directory.
#[derive(Debug, Clone)]
pub(crate) struct EnvDir {
    path: PathBuf,
}

/// The facts about the environment (`EnvInfo`), written last: an environment without it
/// is not ready (a build was interrupted, or is under way).
const READY: &str = "env.json";
const STAMP: &str = "stamp.json";
const IN_USE: &str = "in-use.lock";
/// The prefix of a directory being removed (renamed first, so nothing finds it by name).
const REMOVING: &str = ".removing-";

impl EnvDir {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn venv(&self) -> PathBuf {
        self.path.join("venv")
    }

    pub(crate) fn mplconfig(&self) -> PathBuf {
        self.path.join("mplconfig")
    }

    pub(crate) fn requirements_file(&self) -> PathBuf {
        self.path.join("requirements.txt")
    }

    pub(crate) fn ready_file(&self) -> PathBuf {
        self.path.join(READY)
    }

    pub(crate) fn stamp_file(&self) -> PathBuf {
        self.path.join(STAMP)
    }

    fn in_use_file(&self) -> PathBuf {
        self.path.join(IN_USE)
    }

    /// Creates the directory (it must not exist) and marks it in use by this process.
    pub(crate) fn create(&self) -> Result<InUse, PyenvError> {
        fs::create_dir(&self.path).map_err(io_error(&self.path))?;
        let file = open_lock_file(&self.in_use_file())?;
        lock(file, FlockArg::LockShared, &self.in_use_file()).map(|lock| InUse { _lock: lock })
    }

    /// Marks the environment in use by this process, if it is still there: it may have been
    /// removed between finding it and taking the lock. Waits only while a setup is
    /// removing it.
    pub(crate) fn hold(&self) -> Option<InUse> {
        let path = self.in_use_file();
        let file = File::open(&path).ok()?;
        let held = lock(file, FlockArg::LockShared, &path).ok()?;
        // Removal renames the directory while it holds the lock exclusively: the file we
        // locked must still be the one at this path.
        let locked = held.metadata().ok()?;
        let here = fs::metadata(&path).ok()?;
        if locked.dev() != here.dev() || locked.ino() != here.ino() {
            return None;
        }
        // Best effort: the time only decides which unused environment a later build keeps.
        let _ = held.set_modified(SystemTime::now());
        Some(InUse { _lock: held })
    }

    /// When a process last started using the environment.
    fn last_used(&self) -> SystemTime {
        fs::metadata(self.in_use_file())
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// The in-use lock, exclusively, unless a process uses the environment; `wait`
    /// decides whether to wait for users to let go (only for a directory nobody can be
    /// running: an unfinished build).
    fn exclusive(&self, wait: bool) -> Result<Option<Flock<File>>, PyenvError> {
        let path = self.in_use_file();
        // Created if missing: a build that stopped before making it left no users.
        let file = open_lock_file(&path)?;
        let arg = if wait {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockExclusiveNonblock
        };
        match Flock::lock(file, arg) {
            Ok(held) => Ok(Some(held)),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(io_error(&path)(errno.into())),
        }
    }

    /// Removes what is in the way of a build here: what an interrupted build left (waiting
    /// for processes that are looking at it to let go, which they do at once), or a ready
    /// environment found damaged, unless a process still uses it.
    pub(crate) fn remove_stale(&self) -> Result<(), PyenvError> {
        let unfinished = !self.ready_file().exists();
        let Some(_exclusive) = self.exclusive(unfinished)? else {
            return Err(PyenvError::Broken {
                path: self.path.clone(),
                reason:
                    "it is damaged, and a running sandcell process still uses it; stop that process"
                        .into(),
            });
        };
        self.remove_now()
    }

    /// Renames the directory out of the way (so nothing finds it by name any more), then
    /// deletes it. The caller holds the in-use lock exclusively.
    fn remove_now(&self) -> Result<(), PyenvError> {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let doomed = self
            .path
            .with_file_name(format!("{REMOVING}{name}-{}", std::process::id()));
        fs::rename(&self.path, &doomed).map_err(io_error(&self.path))?;
        fs::remove_dir_all(&doomed).map_err(io_error(&doomed))
    }
}

/// A shared lock on an environment's `in-use.lock`: while a process holds one, no setup
/// removes the environment. Released when dropped (or when the process ends, however).
#[derive(Debug)]
pub(crate) struct InUse {
    _lock: Flock<File>,
}

/// What removing the unused environments did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Removal {
    pub removed: usize,
    /// Environments some process still uses; a later build removes them once unused.
    pub kept_in_use: usize,
    /// The most recently used of the unused environments, kept.
    pub kept_previous: Option<PathBuf>,
}

/// After a build of `keep`: removes the environments in `envs` that no process uses,
/// except the most recently used of them (the previous one: going back to the earlier
/// interpreter or requirements then costs no rebuild), and what an interrupted removal
/// left behind. So a data directory holds the current environment, the previous one,
/// and those running processes use.
pub(crate) fn remove_unused(envs: &Path, keep: &Path) -> Result<Removal, PyenvError> {
    let mut others = Vec::new();
    for entry in fs::read_dir(envs).map_err(io_error(envs))? {
        let entry = entry.map_err(io_error(envs))?;
        let path = entry.path();
        let is_dir = entry.file_type().map_err(io_error(&path))?.is_dir();
        if !is_dir || path == keep {
            continue;
        }
        if entry.file_name().to_string_lossy().starts_with(REMOVING) {
            fs::remove_dir_all(&path).map_err(io_error(&path))?;
            continue;
        }
        let env = EnvDir::new(path);
        others.push((env.last_used(), env));
    }
    others.sort_by_key(|(last_used, _)| std::cmp::Reverse(*last_used));
    let mut removal = Removal::default();
    for (_, env) in others {
        let Some(_exclusive) = env.exclusive(false)? else {
            removal.kept_in_use += 1;
            continue;
        };
        if removal.kept_previous.is_none() && env.ready_file().is_file() {
            removal.kept_previous = Some(env.path.clone());
        } else {
            env.remove_now()?;
            removal.removed += 1;
        }
    }
    Ok(removal)
}

/// Takes `setup.lock` in `root`: one setup at a time per data directory.
pub(crate) fn setup_lock(root: &Path) -> Result<Flock<File>, PyenvError> {
    let path = root.join("setup.lock");
    lock(open_lock_file(&path)?, FlockArg::LockExclusive, &path)
}

fn open_lock_file(path: &Path) -> Result<File, PyenvError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error(path))
}

fn lock(file: File, arg: FlockArg, path: &Path) -> Result<Flock<File>, PyenvError> {
    Flock::lock(file, arg).map_err(|(_, errno)| io_error(path)(errno.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn env_in(envs: &Path, name: &str) -> EnvDir {
        EnvDir::new(envs.join(name))
    }

    /// A ready environment, last used `minutes_ago`.
    fn ready_env(envs: &Path, name: &str, minutes_ago: u64) -> EnvDir {
        let env = env_in(envs, name);
        drop(env.create().unwrap());
        fs::write(env.ready_file(), "{}").unwrap();
        let used = SystemTime::now() - Duration::from_secs(60 * minutes_ago);
        File::open(env.in_use_file())
            .unwrap()
            .set_modified(used)
            .unwrap();
        env
    }

    #[test]
    fn a_build_keeps_the_environments_in_use_and_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let envs = dir.path();
        let current = env_in(envs, "current");
        let _current_in_use = current.create().unwrap();
        let used = ready_env(envs, "used", 1);
        let _used_elsewhere = used.hold().expect("a ready directory can be held");
        let previous = ready_env(envs, "previous", 10);
        let older = ready_env(envs, "older", 20);
        let unfinished = env_in(envs, "unfinished");
        drop(unfinished.create().unwrap());
        let leftover = envs.join(format!("{REMOVING}old-1"));
        fs::create_dir(&leftover).unwrap();

        let removal = remove_unused(envs, current.path()).unwrap();

        assert_eq!(
            removal,
            Removal {
                removed: 2,
                kept_in_use: 1,
                kept_previous: Some(previous.path().to_path_buf()),
            }
        );
        assert!(current.path().is_dir());
        assert!(used.path().is_dir());
        assert!(previous.path().is_dir());
        assert!(!older.path().exists());
        assert!(!unfinished.path().exists());
        assert!(!leftover.exists());
    }

    #[test]
    fn an_environment_is_not_removed_while_this_process_holds_it_either() {
        // flock locks belong to open files, so two holders in one process also exclude
        // each other: a runtime's environment is safe from a setup in the same process.
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path(), "e");
        let _in_use = env.create().unwrap();
        assert!(env.exclusive(false).unwrap().is_none());
        let removal = remove_unused(dir.path(), &dir.path().join("another")).unwrap();
        assert_eq!(removal.kept_in_use, 1);
        assert!(env.path().is_dir());
    }

    #[test]
    fn a_removed_environment_cannot_be_held() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path(), "e");
        drop(env.create().unwrap());
        let held = File::open(env.in_use_file()).unwrap();
        env.remove_stale().unwrap();
        assert!(env.hold().is_none());
        // A process that opened the lock file before the removal finds it is not there.
        assert!(lock(held, FlockArg::LockShared, &env.in_use_file()).is_ok());
        assert!(env.hold().is_none());
        // Built again under the same name, it is a new directory that can be held.
        drop(env.create().unwrap());
        assert!(env.hold().is_some());
    }

    #[test]
    fn a_damaged_environment_in_use_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let env = ready_env(dir.path(), "e", 0);
        let _in_use = env.hold().unwrap();
        let error = env.remove_stale().unwrap_err();
        assert!(matches!(error, PyenvError::Broken { .. }), "{error}");
        assert!(env.path().is_dir());
    }

    #[test]
    fn a_build_that_stopped_before_its_lock_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path(), "e");
        fs::create_dir(env.path()).unwrap();
        env.remove_stale().unwrap();
        assert!(!env.path().exists());
    }
}
