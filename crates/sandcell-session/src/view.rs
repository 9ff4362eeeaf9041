//! The template's view, host side (see `sandcell_sandbox::view` and ARCHITECTURE.md, "The
//! sandbox, step by step"): the Python environment at neutral paths under [`VIEW_ROOT`],
//! so that no session learns where the host keeps it.
//!
//! The big, unchanging trees (the base interpreter's installation when it is not the
//! system's, the virtual environment, each package layer) become read-only images, made
//! once beside what they copy (`<env>/view/*.img`, `<layer>.img`) and kept with it. The
//! small ones (the runtime's package, IPython's and matplotlib's directories) and the
//! venv's `bin` and `pyvenv.cfg`, rewritten for the new paths, go into one writable image
//! made for each runtime, whose file is removed as soon as it is attached. Every image is
//! attached to a loop device that this view holds open for as long as the runtime lives.
//!
//! Only a root host with loop devices has one; elsewhere the environment is bound at its
//! host paths, as `sandcell doctor` says.

use crate::isolation::SYSTEM_DIRS;
use crate::runtime_files::RuntimeFiles;
use nix::fcntl::{Flock, FlockArg};
use sandcell_pyenv::{Environment, Layer};
use sandcell_sandbox::disk;
use sandcell_sandbox::view::{PreparedView, ViewSpec};
use std::fs::{self, File};
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the environment is, inside the template's view and every session's sandbox.
pub const VIEW_ROOT: &str = "/run/sandcell";

/// The environment at neutral paths, ready for templates to start in.
#[derive(Debug)]
pub(crate) struct NeutralView {
    prepared: PreparedView,
    /// Host directories and where they are in the view, the longest first.
    map: Vec<(PathBuf, PathBuf)>,
    /// Set when the interpreter is not the system's: its shared library is found by its
    /// installation's path (RUNPATH), which the view does not have.
    library_path: Option<PathBuf>,
    /// The loop devices' descriptors: the devices stay while these are open.
    _devices: Vec<File>,
}

impl NeutralView {
    /// Makes (or finds) the images of `env`, its `layers` and the runtime's `files`, and
    /// attaches them. Blocking: the first time, the images are written (seconds).
    pub(crate) fn prepare(
        env: &Environment,
        files: &RuntimeFiles,
        layers: &[Layer],
    ) -> Result<Self, String> {
        let root = Path::new(VIEW_ROOT);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(root)
            .map_err(|e| format!("cannot create {VIEW_ROOT}: {e}"))?;
        let info = env.info();
        let is_system = |path: &Path| SYSTEM_DIRS.iter().any(|dir| path.starts_with(dir));
        // (host directory, its name in the view, its image)
        let view_dir = env.view_dir();
        let mut images: Vec<(PathBuf, PathBuf, PathBuf)> = Vec::new();
        let mut library_path = None;
        if !is_system(&info.base_prefix) {
            if !info.base_executable_dir.starts_with(&info.base_prefix)
                && !is_system(&info.base_executable_dir)
            {
                return Err(format!(
                    "the interpreter {} lies outside its installation {}",
                    info.base_executable_dir.display(),
                    info.base_prefix.display()
                ));
            }
            images.push((
                info.base_prefix.clone(),
                "python".into(),
                view_dir.join("python.img"),
            ));
            library_path = Some(root.join("python/lib"));
        }
        images.push((info.prefix.clone(), "env".into(), view_dir.join("env.img")));
        for layer in layers {
            let name = layer
                .dir()
                .file_name()
                .map(PathBuf::from)
                .ok_or_else(|| format!("the layer {} has no name", layer.dir().display()))?;
            images.push((
                layer.dir().to_path_buf(),
                Path::new("layers").join(&name),
                layer.dir().with_extension("img"),
            ));
        }
        make_images(&view_dir, &images)?;

        let copies = [
            (files.dir.clone(), PathBuf::from("runtime")),
            (env.home().ipython(), PathBuf::from("ipython")),
            (env.mplconfig(), PathBuf::from("mplconfig")),
        ];
        let mut map: Vec<(PathBuf, PathBuf)> = images
            .iter()
            .map(|(host, name, _)| (host.clone(), root.join(name)))
            .chain(
                copies
                    .iter()
                    .map(|(host, name)| (host.clone(), root.join(name))),
            )
            .collect();
        map.sort_by_key(|(host, _)| std::cmp::Reverse(host.as_os_str().len()));

        let staging = tempfile::Builder::new()
            .prefix(".view")
            .tempdir_in(env.home().runtime())
            .map_err(|e| format!("cannot make the view's staging directory: {e}"))?;
        let tree = staging.path().join("tree");
        let mkdir = |path: &Path| {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))
        };
        for (_, name, _) in &images {
            mkdir(&tree.join(name))?;
        }
        for (host, name) in &copies {
            mkdir(&tree.join(name))?;
            // IPython's directory is made by the first template that starts.
            if host.exists() {
                copy_tree(host, &tree.join(name))
                    .map_err(|e| format!("cannot copy {}: {e}", host.display()))?;
            }
        }
        let overlay = tree.join("overlay");
        mkdir(&overlay.join("bin"))?;
        rewrite_tree(&info.prefix.join("bin"), &overlay.join("bin"), &map)
            .map_err(|e| format!("cannot rewrite the environment's bin directory: {e}"))?;
        let config = fs::read_to_string(info.prefix.join("pyvenv.cfg"))
            .map_err(|e| format!("cannot read the environment's pyvenv.cfg: {e}"))?;
        fs::write(overlay.join("pyvenv.cfg"), rewrite(&config, &map))
            .map_err(|e| format!("cannot write pyvenv.cfg: {e}"))?;
        let base_image = staging.path().join("base.img");
        disk::create_image_of(&tree, &base_image).map_err(|e| e.to_string())?;

        let mut devices = Vec::new();
        let (base, device) = disk::attach_image(&base_image, false).map_err(|e| e.to_string())?;
        devices.push(device);
        // The loop device keeps the image's file: nothing needs its name any more.
        drop(staging);
        let mut mounted = Vec::new();
        for (_, name, image) in &images {
            let (path, device) = disk::attach_image(image, true).map_err(|e| e.to_string())?;
            devices.push(device);
            mounted.push((path, root.join(name)));
        }
        let spec = ViewSpec {
            root: root.to_path_buf(),
            base,
            images: mounted,
            overlays: vec![
                (root.join("overlay/bin"), root.join("env/bin")),
                (root.join("overlay/pyvenv.cfg"), root.join("env/pyvenv.cfg")),
            ],
        };
        let prepared = PreparedView::new(&spec).map_err(|e| e.to_string())?;
        Ok(Self {
            prepared,
            map,
            library_path,
            _devices: devices,
        })
    }

    /// Where the host's `path` is in the view (the same path when the view has no copy).
    pub(crate) fn path(&self, path: &Path) -> PathBuf {
        self.map
            .iter()
            .find_map(|(host, neutral)| {
                path.strip_prefix(host).ok().map(|rest| {
                    if rest.as_os_str().is_empty() {
                        neutral.clone()
                    } else {
                        neutral.join(rest)
                    }
                })
            })
            .unwrap_or_else(|| path.to_path_buf())
    }

    pub(crate) fn library_path(&self) -> Option<&Path> {
        self.library_path.as_deref()
    }

    pub(crate) fn prepared(&self) -> &PreparedView {
        &self.prepared
    }
}

/// Makes the images in `images` that do not exist yet, one process at a time (under a
/// lock in `view_dir`), each written beside its place and renamed into it when complete.
fn make_images(view_dir: &Path, images: &[(PathBuf, PathBuf, PathBuf)]) -> Result<(), String> {
    if images.iter().all(|(_, _, image)| image.is_file()) {
        return Ok(());
    }
    fs::create_dir_all(view_dir)
        .map_err(|e| format!("cannot create {}: {e}", view_dir.display()))?;
    let lock_file = File::create(view_dir.join("view.lock"))
        .map_err(|e| format!("cannot create the view's lock: {e}"))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock the view: {e}"))?;
    for (host, _, image) in images {
        if image.is_file() {
            continue;
        }
        let partial = image.with_extension("img.partial");
        let _ = fs::remove_file(&partial);
        disk::create_image_of(host, &partial).map_err(|e| e.to_string())?;
        fs::rename(&partial, image).map_err(|e| format!("cannot keep {}: {e}", image.display()))?;
    }
    Ok(())
}

/// `text` with every host directory of `map` replaced by its place in the view.
fn rewrite(text: &str, map: &[(PathBuf, PathBuf)]) -> String {
    map.iter().fold(text.to_owned(), |text, (host, neutral)| {
        text.replace(&*host.to_string_lossy(), &neutral.to_string_lossy())
    })
}

/// Copies the directory `from` into `to` (which exists): files, directories and links
/// as they are.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            symlink(fs::read_link(&source)?, &target)?;
        } else if kind.is_dir() {
            fs::create_dir(&target)?;
            fs::set_permissions(&target, fs::metadata(&source)?.permissions())?;
            copy_tree(&source, &target)?;
        } else {
            fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

/// Copies the venv's `bin` from `from` into `to`, with the host's paths in its scripts
/// and in its links (the interpreter's, absolute) replaced by the view's.
fn rewrite_tree(from: &Path, to: &Path, map: &[(PathBuf, PathBuf)]) -> std::io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            let link = fs::read_link(&source)?;
            symlink(rewrite(&link.to_string_lossy(), map), &target)?;
        } else if kind.is_file() {
            let bytes = fs::read(&source)?;
            match String::from_utf8(bytes) {
                Ok(text) => fs::write(&target, rewrite(&text, map))?,
                Err(binary) => fs::write(&target, binary.into_bytes())?,
            }
            let mode = fs::metadata(&source)?.permissions().mode();
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_are_rewritten_to_the_view_longest_first() {
        let map = vec![
            (
                PathBuf::from("/home/u/.local/share/sandcell/envs/e/venv"),
                PathBuf::from("/run/sandcell/env"),
            ),
            (
                PathBuf::from("/home/u/.pyenv/versions/3.11.7"),
                PathBuf::from("/run/sandcell/python"),
            ),
        ];
        let config = "home = /home/u/.pyenv/versions/3.11.7/bin\ncommand = /home/u/.pyenv/versions/3.11.7/bin/python3.11 -m venv /home/u/.local/share/sandcell/envs/e/venv\n";
        assert_eq!(
            rewrite(config, &map),
            "home = /run/sandcell/python/bin\ncommand = /run/sandcell/python/bin/python3.11 -m venv /run/sandcell/env\n"
        );
    }
}
