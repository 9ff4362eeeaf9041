//! Where `sandcell chat` keeps the files a cell created or changed. A temporary working
//! directory is removed on exit, so each such file is copied out (to the current
//! directory or `--out`) under a name no existing file has; with `--workdir` the files
//! are already where the person asked. Either way, paths are shown as the host sees them.

use anyhow::Context;
use sandcell_agent::AgentEvent;
use sandcell_safedir::{Create, SafeDir, SafeDirError, SafePath};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Numbered names tried for one file before giving up (`plot-1.png` … `plot-9999.png`).
const MAX_NUMBER: usize = 9999;

pub struct KeptFiles {
    /// The host directory mounted at `/mnt/data`.
    workdir: PathBuf,
    copies: Option<CopyOut>,
}

/// Copies out of a temporary working directory.
struct CopyOut {
    /// The working directory, read without following links a cell planted.
    from: SafeDir,
    /// Where copies go, and the same directory as the person named it.
    to: SafeDir,
    to_dir: PathBuf,
    /// Each session path copied so far (relative to `/mnt/data`) and where it went: a
    /// file changed again replaces its own copy rather than taking another name.
    copied: HashMap<String, SafePath>,
}

impl KeptFiles {
    /// Files stay in `workdir`, a directory the person chose.
    pub fn in_place(workdir: &Path) -> KeptFiles {
        KeptFiles {
            workdir: workdir.to_path_buf(),
            copies: None,
        }
    }

    /// Files are copied from the temporary `workdir` to `out_dir` (made if missing).
    pub fn copied_to(workdir: &Path, out_dir: &Path) -> anyhow::Result<KeptFiles> {
        std::fs::create_dir_all(out_dir)
            .with_context(|| format!("cannot create the output directory {}", out_dir.display()))?;
        let open = |dir: &Path| {
            SafeDir::open(dir).with_context(|| format!("cannot open {}", dir.display()))
        };
        Ok(KeptFiles {
            workdir: workdir.to_path_buf(),
            copies: Some(CopyOut {
                from: open(workdir)?,
                to: open(out_dir)?,
                to_dir: out_dir.to_path_buf(),
                copied: HashMap::new(),
            }),
        })
    }

    /// The directory files are copied to, if the working directory is temporary.
    pub fn copied_to_dir(&self) -> Option<&Path> {
        self.copies.as_ref().map(|copies| copies.to_dir.as_path())
    }

    /// Copies out the files an execution created or changed, and the figures saved from
    /// its results; a file that cannot be copied is said on stderr.
    pub fn keep(&mut self, event: &AgentEvent) {
        let (
            Some(copies),
            AgentEvent::Execution {
                execution, images, ..
            },
        ) = (&mut self.copies, event)
        else {
            return;
        };
        let changed = execution.files.iter().map(|file| file.path.as_str());
        for session_path in changed.chain(images.iter().map(String::as_str)) {
            let relative = relative(session_path);
            if let Err(error) = copies.copy(relative) {
                eprintln!("sandcell: cannot keep /mnt/data/{relative}: {error}");
            }
        }
    }

    /// Where the host has the file `session_path` (`/mnt/data/x` or `x`).
    pub fn host_path(&self, session_path: &str) -> PathBuf {
        let relative = relative(session_path);
        match self
            .copies
            .as_ref()
            .and_then(|c| Some((c, c.copied.get(relative)?)))
        {
            Some((copies, copy)) => copies.to_dir.join(copy.to_string()),
            None => self.workdir.join(relative),
        }
    }

    /// `event` with its file and figure paths as the host has them.
    pub fn on_host<'a>(&self, event: &'a AgentEvent) -> Cow<'a, AgentEvent> {
        let AgentEvent::Execution {
            call_id,
            execution,
            images,
        } = event
        else {
            return Cow::Borrowed(event);
        };
        let mut execution = execution.clone();
        for file in &mut execution.files {
            file.path = self.host_path(&file.path).display().to_string();
        }
        Cow::Owned(AgentEvent::Execution {
            call_id: call_id.clone(),
            execution,
            images: images
                .iter()
                .map(|image| self.host_path(image).display().to_string())
                .collect(),
        })
    }
}

impl CopyOut {
    fn copy(&mut self, relative: &str) -> anyhow::Result<()> {
        let source = SafePath::parse(relative)?;
        let (mut file, _) = self.from.open_file(&source)?;
        if let Some(copy) = self.copied.get(relative) {
            self.to.write_from(&mut file, copy, Create::Replace)?;
            return Ok(());
        }
        for number in 0..=MAX_NUMBER {
            let name = SafePath::parse(&numbered(relative, number))?;
            match self.to.write_from(&mut file, &name, Create::New) {
                Ok(_) => {
                    self.copied.insert(relative.to_owned(), name);
                    return Ok(());
                }
                Err(SafeDirError::AlreadyExists(_)) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        anyhow::bail!("{relative} and its numbered names up to {MAX_NUMBER} are all taken")
    }
}

fn relative(session_path: &str) -> &str {
    session_path
        .strip_prefix("/mnt/data/")
        .unwrap_or(session_path)
}

/// `dir/plot.png` as it is (`number` 0), else `dir/plot-N.png`.
fn numbered(relative: &str, number: usize) -> String {
    if number == 0 {
        return relative.to_owned();
    }
    let (dir, name) = match relative.rsplit_once('/') {
        Some((dir, name)) => (format!("{dir}/"), name),
        None => (String::new(), relative),
    };
    // A leading dot starts a hidden name, not an extension.
    match name.rfind('.').filter(|&dot| dot > 0) {
        Some(dot) => format!("{dir}{}-{number}{}", &name[..dot], &name[dot..]),
        None => format!("{dir}{name}-{number}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_names_keep_the_extension_and_the_directory() {
        assert_eq!(numbered("plot.png", 0), "plot.png");
        assert_eq!(numbered("plot.png", 2), "plot-2.png");
        assert_eq!(numbered("out/data.tar.gz", 1), "out/data.tar-1.gz");
        assert_eq!(numbered(".env", 1), ".env-1");
        assert_eq!(numbered("README", 3), "README-3");
    }
}
