//! Waiting for a session's cgroup to empty once its process tree was killed. The kernel
//! lets go of a task's place under the pids limit only when the task is reaped, which can
//! come a while after it died (an orphaned zombie waits for whichever init adopted it). A
//! new process started before then shares the limit with the remains of the old one, and
//! under a small limit cannot start its threads.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What is left in a session's cgroup.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Occupancy {
    /// Distinct processes listed in `cgroup.procs` (of any v1 hierarchy).
    pub processes: usize,
    /// Tasks still charged to the pids controller (`pids.current`), zombies included.
    pub charged_tasks: u64,
}

impl Occupancy {
    /// Reads the cgroup whose `cgroup.procs` files these are (one per v1 hierarchy, one
    /// in v2). A file that cannot be read counts as empty: nothing can be waited for there.
    pub fn measure(procs_files: &[PathBuf]) -> Self {
        let mut listed = BTreeSet::new();
        let mut charged_tasks = 0;
        for procs_file in procs_files {
            if let Ok(procs) = fs::read_to_string(procs_file) {
                listed.extend(
                    procs
                        .lines()
                        .map(str::trim)
                        .filter(|pid| !pid.is_empty())
                        .map(str::to_owned),
                );
            }
            // Only the pids controller's directory has it (v1), or the one directory (v2).
            charged_tasks += procs_file
                .parent()
                .map_or(0, |dir| read_count(&dir.join("pids.current")));
        }
        Self {
            processes: listed.len(),
            charged_tasks,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.processes == 0 && self.charged_tasks == 0
    }
}

/// A counter file's value; 0 when it is missing or unreadable.
fn read_count(file: &Path) -> u64 {
    fs::read_to_string(file)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls until the cgroup holds no task. After `timeout`, gives up and returns what was
/// still there.
pub(crate) async fn wait_until_empty(
    procs_files: &[PathBuf],
    timeout: Duration,
    poll_interval: Duration,
) -> Result<(), Occupancy> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let occupancy = Occupancy::measure(procs_files);
        if occupancy.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(occupancy);
        }
        tokio::time::sleep(poll_interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake v1 layout: a memory hierarchy (no pids.current) and a pids hierarchy.
    fn v1_cgroup(root: &Path, procs: &str, charged: &str) -> Vec<PathBuf> {
        let memory = root.join("memory/s1");
        let pids = root.join("pids/s1");
        for dir in [&memory, &pids] {
            fs::create_dir_all(dir).expect("a temporary directory is writable");
            fs::write(dir.join("cgroup.procs"), procs).expect("a temporary file is writable");
        }
        fs::write(pids.join("pids.current"), charged).expect("a temporary file is writable");
        vec![memory.join("cgroup.procs"), pids.join("cgroup.procs")]
    }

    #[test]
    fn zombies_charged_to_the_pids_controller_keep_a_cgroup_occupied() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let files = v1_cgroup(root.path(), "", "2\n");
        let occupancy = Occupancy::measure(&files);
        assert_eq!(
            occupancy,
            Occupancy {
                processes: 0,
                charged_tasks: 2
            }
        );
        assert!(!occupancy.is_empty());
    }

    #[test]
    fn listed_processes_keep_a_cgroup_occupied() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let files = v1_cgroup(root.path(), "41\n42\n", "0\n");
        // Every v1 hierarchy lists the same processes: each counts once.
        assert_eq!(Occupancy::measure(&files).processes, 2);
    }

    #[test]
    fn a_v2_cgroup_is_empty_when_procs_and_pids_current_are() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let dir = root.path().join("s1");
        fs::create_dir(&dir).expect("a temporary directory is writable");
        fs::write(dir.join("cgroup.procs"), "").expect("a temporary file is writable");
        fs::write(dir.join("pids.current"), "0\n").expect("a temporary file is writable");
        assert!(Occupancy::measure(&[dir.join("cgroup.procs")]).is_empty());
    }

    #[test]
    fn missing_files_count_as_empty() {
        let root = tempfile::tempdir().expect("a temporary directory");
        assert!(Occupancy::measure(&[root.path().join("gone/cgroup.procs")]).is_empty());
        assert!(Occupancy::measure(&[]).is_empty());
    }

    #[tokio::test]
    async fn the_wait_ends_when_the_last_task_is_released() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let files = v1_cgroup(root.path(), "", "1\n");
        let pids_current = root.path().join("pids/s1/pids.current");
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            fs::write(pids_current, "0\n").expect("a temporary file is writable");
        });
        let waited =
            wait_until_empty(&files, Duration::from_secs(5), Duration::from_millis(5)).await;
        assert_eq!(waited, Ok(()));
        release.await.expect("the release task ran");
    }

    #[tokio::test]
    async fn the_wait_gives_up_and_says_what_is_left() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let files = v1_cgroup(root.path(), "7\n", "3\n");
        let waited =
            wait_until_empty(&files, Duration::from_millis(30), Duration::from_millis(5)).await;
        assert_eq!(
            waited,
            Err(Occupancy {
                processes: 1,
                charged_tasks: 3
            })
        );
    }
}
