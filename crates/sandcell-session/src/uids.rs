//! A host uid/gid for each session, from the range a root host gives sessions
//! (`sandcell_sandbox::subids`). A session holds its [`UidLease`] for as long as it
//! lives (restarts of its process keep it) and gives it back when it is dropped.
//!
//! An id is claimed by binding the abstract Unix socket `sandcell-uid-N`: the kernel
//! refuses a second bind of the name, from this process or from another sandcell of the
//! machine (same network namespace), and frees it when the holder closes it or dies, so
//! no claim outlives its session and no lock file can go stale.

use crate::error::SessionError;
use sandcell_sandbox::subids::IdRange;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Hands out the ids of a range, one per live session.
#[derive(Debug)]
pub(crate) struct UidPool {
    range: IdRange,
    /// Where the next search starts, so that a freed id is not reused at once.
    next: AtomicU32,
}

/// One session's uid and gid, claimed until dropped.
#[derive(Debug)]
pub(crate) struct UidLease {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    _claim: UnixListener,
}

impl UidPool {
    pub(crate) fn new(range: IdRange) -> Self {
        Self {
            range,
            next: AtomicU32::new(0),
        }
    }

    pub(crate) fn range(&self) -> &IdRange {
        &self.range
    }

    /// The next free id of the range.
    pub(crate) fn lease(&self) -> Result<UidLease, SessionError> {
        let count = self.range.count;
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        for step in 0..count {
            let offset = (start + step) % count;
            let (uid, gid) = self.range.ids(offset);
            if let Some(claim) = claim(uid) {
                self.next.store(offset + 1, Ordering::Relaxed);
                return Ok(UidLease {
                    uid,
                    gid,
                    _claim: claim,
                });
            }
        }
        Err(SessionError::Spawn(format!(
            "every id of the sessions' range ({}) is in use by a live session; stop some sessions, or give root a larger range in /etc/subuid and /etc/subgid",
            self.range.describe()
        )))
    }
}

/// Binds the id's abstract socket name; `None` when another holder has it.
fn claim(uid: u32) -> Option<UnixListener> {
    let name = format!("sandcell-uid-{uid}");
    let address = SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
    UnixListener::bind_addr(&address).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A range far from any real one, of `count` ids: test `slot`'s own.
    fn pool(slot: u32, count: u32) -> UidPool {
        let first = 3_000_000_000 + std::process::id() % 100_000 * 16 + slot * 8;
        UidPool::new(IdRange {
            first_uid: first,
            first_gid: first + 1,
            count,
            configured: true,
        })
    }

    #[test]
    fn live_leases_have_distinct_ids_and_a_dropped_one_is_free_again() {
        let pool = pool(0, 3);
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        let c = pool.lease().unwrap();
        let mut uids = vec![a.uid, b.uid, c.uid];
        uids.sort_unstable();
        uids.dedup();
        assert_eq!(uids.len(), 3);
        assert_eq!(b.gid, b.uid + 1, "the gid is at the uid's offset");
        let full = pool.lease().unwrap_err().to_string();
        assert!(full.contains("in use by a live session"), "{full}");
        let freed = b.uid;
        drop(b);
        assert_eq!(pool.lease().unwrap().uid, freed);
    }

    #[test]
    fn an_id_claimed_elsewhere_is_skipped() {
        // Another pool over the same range stands for another sandcell process.
        let (first, second) = (pool(1, 2), pool(1, 2));
        let held = first.lease().unwrap();
        let other = second.lease().unwrap();
        assert_ne!(held.uid, other.uid);
        assert!(second.lease().is_err());
    }
}
