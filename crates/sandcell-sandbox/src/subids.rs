//! The range of host ids that sessions take one of each, so that per-uid kernel limits
//! (inotify instances, RLIMIT_NPROC, …), file ownership and signals separate them.
//!
//! A root host uses root's subordinate range (`root:FIRST:COUNT` in `/etc/subuid` and
//! `/etc/subgid`, as `usermod --add-subuids` writes it); without one, the default block
//! [`DEFAULT_FIRST`]`+`[`DEFAULT_COUNT`], provided no user, group or other subordinate
//! range of this machine lies in it. Only reading files here: allocating ids to sessions
//! is the session runtime's.

use std::ops::Range;
use std::path::Path;

/// The first id of the default range (where `useradd` starts subordinate ranges too, so
/// it is taken only when no user of this machine has one there).
pub const DEFAULT_FIRST: u32 = 100_000;
/// The size of the default range (one user's subordinate range, as `useradd` gives).
pub const DEFAULT_COUNT: u32 = 65_536;

/// `count` host uids from `first_uid` and as many gids from `first_gid`; a session's gid
/// is at the same offset as its uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub first_uid: u32,
    pub first_gid: u32,
    pub count: u32,
    /// Root's own entries in `/etc/subuid` and `/etc/subgid`, or the default block.
    pub configured: bool,
}

impl IdRange {
    /// The uid and gid at `offset` (below `count`).
    pub fn ids(&self, offset: u32) -> (u32, u32) {
        (self.first_uid + offset, self.first_gid + offset)
    }

    /// The range as `/etc/subuid` would say it.
    pub fn describe(&self) -> String {
        let gids = if self.first_gid == self.first_uid {
            String::new()
        } else {
            format!(" (gids from {})", self.first_gid)
        };
        format!(
            "uids {}–{}{gids}",
            self.first_uid,
            self.first_uid + (self.count - 1)
        )
    }
}

/// The range root's sessions take their ids from, or why there is none (a sentence).
pub fn root_range() -> Result<IdRange, String> {
    let files = IdFiles::read(Path::new("/etc"));
    range_in(&files)
}

/// What the range is decided from: the contents of `/etc`'s id files.
struct IdFiles {
    subuid: String,
    subgid: String,
    passwd: String,
    group: String,
}

impl IdFiles {
    fn read(etc: &Path) -> Self {
        let read = |name: &str| std::fs::read_to_string(etc.join(name)).unwrap_or_default();
        Self {
            subuid: read("subuid"),
            subgid: read("subgid"),
            passwd: read("passwd"),
            group: read("group"),
        }
    }
}

fn range_in(files: &IdFiles) -> Result<IdRange, String> {
    let is_root = |entry: &Entry| entry.owner == "root" || entry.owner == "0";
    let uids = entries(&files.subuid).find(is_root);
    let gids = entries(&files.subgid).find(is_root);
    match (uids, gids) {
        (Some(uids), Some(gids)) => Ok(IdRange {
            first_uid: uids.ids.start,
            first_gid: gids.ids.start,
            count: (uids.ids.end - uids.ids.start).min(gids.ids.end - gids.ids.start),
            configured: true,
        }),
        (Some(_), None) | (None, Some(_)) => Err(
            "root has a subordinate range in only one of /etc/subuid and /etc/subgid; give it one in both (`usermod --add-subuids FIRST-LAST --add-subgids FIRST-LAST root`)".into(),
        ),
        (None, None) => {
            let default = DEFAULT_FIRST..DEFAULT_FIRST + DEFAULT_COUNT;
            let taken = entries(&files.subuid)
                .chain(entries(&files.subgid))
                .find(|entry| overlaps(&entry.ids, &default))
                .map(|entry| format!("{}'s subordinate range", entry.owner))
                .or_else(|| id_in(&files.passwd, &default).map(|name| format!("the user {name}")))
                .or_else(|| id_in(&files.group, &default).map(|name| format!("the group {name}")));
            match taken {
                Some(what) => Err(format!(
                    "root has no subordinate range in /etc/subuid and /etc/subgid, and the default ids {}–{} are {what}'s; give root a free range (`usermod --add-subuids FIRST-LAST --add-subgids FIRST-LAST root`)",
                    default.start,
                    default.end - 1
                )),
                None => Ok(IdRange {
                    first_uid: DEFAULT_FIRST,
                    first_gid: DEFAULT_FIRST,
                    count: DEFAULT_COUNT,
                    configured: false,
                }),
            }
        }
    }
}

/// One line of `/etc/subuid` or `/etc/subgid`: `owner:first:count`.
struct Entry<'a> {
    owner: &'a str,
    ids: Range<u32>,
}

fn entries(file: &str) -> impl Iterator<Item = Entry<'_>> {
    file.lines().filter_map(|line| {
        let mut parts = line.trim().split(':');
        let owner = parts.next()?;
        let first: u32 = parts.next()?.parse().ok()?;
        let count: u32 = parts.next()?.parse().ok()?;
        let end = first.checked_add(count).filter(|_| count > 0)?;
        Some(Entry {
            owner,
            ids: first..end,
        })
    })
}

/// The name of the first `/etc/passwd` or `/etc/group` entry whose id is in `ids`.
fn id_in<'a>(file: &'a str, ids: &Range<u32>) -> Option<&'a str> {
    file.lines().find_map(|line| {
        let mut parts = line.split(':');
        let name = parts.next()?;
        let id: u32 = parts.nth(1)?.parse().ok()?;
        ids.contains(&id).then_some(name)
    })
}

fn overlaps(a: &Range<u32>, b: &Range<u32>) -> bool {
    a.start < b.end && b.start < a.end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(subuid: &str, subgid: &str, passwd: &str) -> IdFiles {
        IdFiles {
            subuid: subuid.into(),
            subgid: subgid.into(),
            passwd: passwd.into(),
            group: String::new(),
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/:/bin/false\n";

    #[test]
    fn roots_configured_range_is_used() {
        let range = range_in(&files(
            "alice:100000:65536\nroot:200000:1000\n",
            "root:300000:2000\n",
            PASSWD,
        ))
        .unwrap();
        assert_eq!(
            range,
            IdRange {
                first_uid: 200000,
                first_gid: 300000,
                count: 1000,
                configured: true
            }
        );
        assert_eq!(range.ids(5), (200005, 300005));
    }

    #[test]
    fn the_default_range_is_used_only_when_nobody_has_it() {
        let free = range_in(&files("", "", PASSWD)).unwrap();
        assert_eq!(
            (free.first_uid, free.count, free.configured),
            (100000, 65536, false)
        );
        let someones = range_in(&files(
            "alice:100000:65536\n",
            "alice:100000:65536\n",
            PASSWD,
        ))
        .unwrap_err();
        assert!(someones.contains("alice's subordinate range"), "{someones}");
        let a_users = range_in(&files("", "", "bob:x:120000:100::/:/bin/sh\n")).unwrap_err();
        assert!(a_users.contains("the user bob"), "{a_users}");
    }

    #[test]
    fn a_range_in_only_one_file_is_refused() {
        let half = range_in(&files("root:200000:1000\n", "", PASSWD)).unwrap_err();
        assert!(half.contains("only one of"), "{half}");
    }
}
