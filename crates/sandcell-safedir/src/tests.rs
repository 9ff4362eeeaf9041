use super::*;
use std::io::Read;
use std::os::unix::fs::symlink;

/// A directory and a host directory beside it, with a canary file the tests must never
/// reach through the directory.
struct Fixture {
    root: tempfile::TempDir,
    outside: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let fixture = Self {
            root: tempfile::tempdir().unwrap(),
            outside: tempfile::tempdir().unwrap(),
        };
        std::fs::write(fixture.canary(), "canary").unwrap();
        fixture
    }

    fn canary(&self) -> PathBuf {
        self.outside.path().join("canary")
    }

    fn plant(&self, name: &str, target: &Path) {
        symlink(target, self.root.path().join(name)).unwrap();
    }

    fn open(&self, resolver: Resolver) -> SafeDir {
        SafeDir::open(self.root.path())
            .unwrap()
            .with_resolver(resolver)
            .shown_as("/mnt/data")
    }

    /// The canary's content and modification time, to compare before and after.
    fn canary_state(&self) -> (String, SystemTime) {
        let meta = std::fs::symlink_metadata(self.canary()).unwrap();
        (
            std::fs::read_to_string(self.canary()).unwrap(),
            meta.modified().unwrap(),
        )
    }
}

/// Both methods; `openat2` only where this kernel has it (said loudly otherwise).
fn resolvers() -> Vec<Resolver> {
    let probe = tempfile::tempdir().unwrap();
    let dir = SafeDir::open(probe.path()).unwrap();
    if resolve::beneath(&dir.root, ".").is_ok() {
        vec![Resolver::Openat2, Resolver::Walk]
    } else {
        eprintln!("SKIPPED: this kernel has no openat2; only the O_NOFOLLOW walk is tested");
        vec![Resolver::Walk]
    }
}

fn path(raw: &str) -> SafePath {
    SafePath::parse(raw).unwrap()
}

fn read(dir: &SafeDir, raw: &str) -> Result<String, SafeDirError> {
    let (mut file, _) = dir.open_file(&path(raw))?;
    let mut content = String::new();
    file.read_to_string(&mut content).unwrap();
    Ok(content)
}

fn refused<T>(result: Result<T, SafeDirError>) -> bool {
    matches!(result, Err(SafeDirError::Symlink(_)))
}

fn listed(dir: &SafeDir) -> Vec<String> {
    let mut paths: Vec<String> = dir
        .files(WalkLimits {
            max_entries: 1000,
            max_depth: 10,
        })
        .files
        .into_iter()
        .map(|f| f.path.display().to_string())
        .collect();
    paths.sort();
    paths
}

#[test]
fn files_are_written_listed_read_and_removed() {
    for resolver in resolvers() {
        let fixture = Fixture::new();
        let dir = fixture.open(resolver);
        let written = dir
            .write_file(&path("sub/dir/table.csv"), b"a,b\n", Create::New)
            .unwrap();
        assert_eq!(
            (written.size, written.path),
            (4, PathBuf::from("sub/dir/table.csv"))
        );
        assert!(matches!(
            dir.write_file(&path("sub/dir/table.csv"), b"x", Create::New),
            Err(SafeDirError::AlreadyExists(_))
        ));
        dir.write_file(&path("sub/dir/table.csv"), b"a,b\n1,2\n", Create::Replace)
            .unwrap();
        std::fs::write(fixture.root.path().join("top.txt"), "x").unwrap();
        assert_eq!(
            listed(&dir),
            ["sub/dir/table.csv", "top.txt"],
            "{resolver:?}"
        );
        assert_eq!(read(&dir, "sub/dir/table.csv").unwrap(), "a,b\n1,2\n");
        dir.remove_file(&path("sub/dir/table.csv")).unwrap();
        assert!(matches!(
            read(&dir, "sub/dir/table.csv"),
            Err(SafeDirError::NotFound(_))
        ));
        assert!(matches!(
            dir.remove_file(&path("sub")),
            Err(SafeDirError::IsDirectory(_))
        ));
        assert!(matches!(
            read(&dir, "sub"),
            Err(SafeDirError::IsDirectory(_))
        ));
        assert!(matches!(
            read(&dir, "top.txt/x"),
            Err(SafeDirError::NotFound(_))
        ));
        // Nothing temporary is left behind.
        assert_eq!(listed(&dir), ["top.txt"]);
    }
}

#[test]
fn planted_links_are_never_followed() {
    for resolver in resolvers() {
        let fixture = Fixture::new();
        let before = fixture.canary_state();
        fixture.plant("canary.png", &fixture.canary());
        fixture.plant("shadow", Path::new("/etc/shadow"));
        fixture.plant("outside", fixture.outside.path());
        std::fs::create_dir(fixture.root.path().join("real")).unwrap();
        std::fs::write(fixture.root.path().join("real/f"), "f").unwrap();
        fixture.plant("inside", Path::new("real"));
        let dir = fixture.open(resolver);
        for raw in ["canary.png", "shadow", "outside/canary", "inside/f"] {
            assert!(refused(read(&dir, raw)), "{resolver:?} read {raw}");
            assert!(
                refused(dir.write_file(&path(raw), b"x", Create::Replace)),
                "{resolver:?} replace {raw}"
            );
            assert!(
                refused(dir.copy_in(&fixture.canary(), &path(raw), Create::Replace)),
                "{resolver:?} copy to {raw}"
            );
        }
        for raw in ["outside/new.png", "outside/figure_1.png", "inside/new"] {
            let new = dir.write_file(&path(raw), b"x", Create::New);
            assert!(refused(new), "{resolver:?} create {raw}");
        }
        // O_EXCL never follows the link it finds: the name is simply taken.
        assert!(matches!(
            dir.write_file(&path("canary.png"), b"x", Create::New),
            Err(SafeDirError::AlreadyExists(_))
        ));
        let staged = fixture.root.path().join("real/staged");
        std::fs::write(&staged, "upload").unwrap();
        assert!(refused(dir.move_in(&staged, &path("canary.png"))));
        assert!(refused(dir.move_in(&staged, &path("outside/moved"))));
        // Listing shows real files only; removing a link removes the link only.
        assert_eq!(listed(&dir), ["real/f", "real/staged"]);
        dir.remove_file(&path("canary.png")).unwrap();
        assert!(refused(dir.remove_file(&path("outside/canary"))));
        assert_eq!(fixture.canary_state(), before, "{resolver:?}");
        assert_eq!(
            std::fs::read_dir(fixture.outside.path()).unwrap().count(),
            1
        );
    }
}

#[test]
fn a_directory_swapped_for_a_link_after_opening_is_not_followed() {
    for resolver in resolvers() {
        let fixture = Fixture::new();
        std::fs::create_dir(fixture.root.path().join("outputs")).unwrap();
        let dir = fixture.open(resolver);
        std::fs::rename(
            fixture.root.path().join("outputs"),
            fixture.root.path().join("moved"),
        )
        .unwrap();
        fixture.plant("outputs", fixture.outside.path());
        let written = dir.write_file(&path("outputs/call_1.txt"), b"x", Create::Replace);
        assert!(
            matches!(written, Err(SafeDirError::Symlink(_))),
            "{written:?}"
        );
        assert!(matches!(
            read(&dir, "outputs/canary"),
            Err(SafeDirError::Symlink(_))
        ));
        assert_eq!(
            std::fs::read_dir(fixture.outside.path()).unwrap().count(),
            1
        );
    }
}

#[test]
fn replacing_never_writes_through_a_hard_link_or_into_a_fifo() {
    for resolver in resolvers() {
        let fixture = Fixture::new();
        let original = fixture.root.path().join("original");
        std::fs::write(&original, "keep").unwrap();
        std::fs::hard_link(&original, fixture.root.path().join("figure_1.png")).unwrap();
        nix::unistd::mkfifo(
            &fixture.root.path().join("pipe"),
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let dir = fixture.open(resolver);
        dir.write_file(&path("figure_1.png"), b"new", Create::Replace)
            .unwrap();
        assert_eq!(std::fs::read_to_string(&original).unwrap(), "keep");
        assert_eq!(read(&dir, "figure_1.png").unwrap(), "new");
        // A FIFO is neither opened (that would block) nor written into.
        assert!(matches!(
            read(&dir, "pipe"),
            Err(SafeDirError::NotRegular(_))
        ));
        dir.write_file(&path("pipe"), b"file", Create::Replace)
            .unwrap();
        assert_eq!(read(&dir, "pipe").unwrap(), "file");
    }
}

#[test]
fn walks_stop_at_their_limits_and_say_so() {
    let fixture = Fixture::new();
    let dir = fixture.open(Resolver::Walk);
    for n in 0..10 {
        dir.write_file(&path(&format!("f{n}")), b"x", Create::New)
            .unwrap();
    }
    dir.write_file(&path("a/b/c/deep"), b"x", Create::New)
        .unwrap();
    let all = dir.files(WalkLimits {
        max_entries: 100,
        max_depth: 3,
    });
    assert!(all.complete);
    assert_eq!(all.files.len(), 11);
    assert!(all.files.iter().all(|f| f.size == 1 && f.allocated > 0));
    let shallow = dir.files(WalkLimits {
        max_entries: 100,
        max_depth: 2,
    });
    assert!(!shallow.complete);
    assert_eq!(shallow.files.len(), 10);
    let few = dir.files(WalkLimits {
        max_entries: 4,
        max_depth: 3,
    });
    assert!(!few.complete);
    assert!(few.files.len() <= 4);
}

#[test]
fn errors_name_the_path_as_the_reader_knows_it() {
    let fixture = Fixture::new();
    fixture.plant("link", &fixture.canary());
    let dir = fixture.open(Resolver::Walk);
    let error = read(&dir, "link").unwrap_err().to_string();
    assert_eq!(
        error,
        "/mnt/data/link goes through a symbolic link, and sandcell does not follow links in a session's files."
    );
}

#[test]
fn the_probe_picks_openat2_where_the_kernel_has_it() {
    let fixture = Fixture::new();
    let dir = SafeDir::open(fixture.root.path()).unwrap();
    let has_openat2 = resolve::beneath(&dir.root, ".").is_ok();
    if !has_openat2 {
        eprintln!("SKIPPED in part: this kernel has no openat2, so the walk must be chosen");
    }
    let expected = if has_openat2 {
        Resolver::Openat2
    } else {
        Resolver::Walk
    };
    assert_eq!(dir.resolver, expected);
}
