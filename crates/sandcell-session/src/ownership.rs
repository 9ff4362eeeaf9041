//! A session's working directory belongs to the ids the session runs as. A directory a
//! session had before under other ids (a session started again after sandcell
//! restarted gets new ones) is given over whole, files and directories beneath it too;
//! a directory of anyone else (a user's own, named with `--workdir`) only at its top, as
//! its files are that user's.
//!
//! The tree was written by sandboxed code, which may have planted links anywhere: the
//! walk goes from one open directory to the next with `O_NOFOLLOW`, and changes each
//! entry with `fchownat(AT_SYMLINK_NOFOLLOW)`, so no link is ever followed. It runs
//! before the session's process starts.

use nix::dir::{Dir, Type};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Deeper directories keep their owner (the walk holds one descriptor per level).
const MAX_DEPTH: usize = 128;

/// Gives `root` to `uid`/`gid`, and everything beneath it when its owner was a session's
/// (`was_sessions` says which uids are); only its owner may enter it (other sessions'
/// uids included: a file's mode is chosen by the code that writes it).
pub(crate) fn give_to(
    root: &Path,
    uid: u32,
    gid: u32,
    was_sessions: impl Fn(u32) -> bool,
) -> nix::Result<()> {
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    let mut dir = Dir::open(root, directory_flags(), Mode::empty())?;
    nix::sys::stat::fchmod(dir.as_raw_fd(), Mode::S_IRWXU)?;
    let stat = nix::sys::stat::fstat(dir.as_raw_fd())?;
    if stat.st_uid == uid.as_raw() && stat.st_gid == gid.as_raw() {
        return Ok(());
    }
    if was_sessions(stat.st_uid) {
        give_beneath(&mut dir, uid, gid, 0)?;
    }
    // The root last: a walk cut short is done again next time.
    nix::unistd::fchown(dir.as_raw_fd(), Some(uid), Some(gid))
}

fn directory_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn give_beneath(dir: &mut Dir, uid: Uid, gid: Gid, depth: usize) -> nix::Result<()> {
    let fd = dir.as_raw_fd();
    let mut subdirectories = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        nix::unistd::fchownat(
            Some(fd),
            name,
            Some(uid),
            Some(gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        // An unknown type is opened too: O_NOFOLLOW | O_DIRECTORY refuses anything else.
        if matches!(entry.file_type(), Some(Type::Directory) | None) {
            subdirectories.push(name.to_owned());
        }
    }
    if depth + 1 >= MAX_DEPTH {
        return Ok(());
    }
    for name in subdirectories {
        match Dir::openat(Some(fd), name.as_c_str(), directory_flags(), Mode::empty()) {
            Ok(mut sub) => give_beneath(&mut sub, uid, gid, depth + 1)?,
            // Not a directory (after all, or any more): nothing beneath it.
            Err(nix::errno::Errno::ENOTDIR | nix::errno::Errno::ELOOP) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_tree_is_given_over_without_following_links() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: only root can give files to other users");
            return;
        }
        let outside = tempfile::tempdir().unwrap();
        let host_file = outside.path().join("host-file");
        std::fs::write(&host_file, "").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(&host_file, dir.path().join("a/link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("dirlink")).unwrap();

        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        give_to(dir.path(), 4_000_000_001, 4_000_000_002, |owner| owner == 0).unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700, "only the owner enters");
        for path in ["", "a", "a/b", "a/b/f", "a/link", "dirlink"] {
            let meta = std::fs::symlink_metadata(dir.path().join(path)).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid()),
                (4_000_000_001, 4_000_000_002),
                "{path}"
            );
        }
        for untouched in [host_file.as_path(), outside.path()] {
            assert_eq!(
                std::fs::metadata(untouched).unwrap().uid(),
                0,
                "{untouched:?}"
            );
        }
    }

    #[test]
    fn a_directory_of_someone_elses_is_given_over_only_at_its_top() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: only root can give files to other users");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("theirs"), "x").unwrap();
        give_to(dir.path(), 4_000_000_003, 4_000_000_004, |_| false).unwrap();
        assert_eq!(std::fs::metadata(dir.path()).unwrap().uid(), 4_000_000_003);
        let file = std::fs::metadata(dir.path().join("theirs")).unwrap();
        assert_eq!(file.uid(), 0, "the files stay their owner's");
    }
}
