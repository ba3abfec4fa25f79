//! Replacing the destination so that its consumer never reads it half written: the rendered
//! text first becomes a candidate file in the destination's own directory (same filesystem,
//! so the final `rename` is atomic), synced to disk, where `check_command` can read it; only
//! then is it renamed over the destination, and the directory synced so the rename survives
//! a crash. A candidate that is not installed is removed.
//!
//! The candidate gets `mode` if one is set, else the destination's permissions (0644 for a
//! new file, less the umask), and the destination's owner when we may set it (as root).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Names candidates apart within this process (the pid sets processes apart).
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A rendered file next to the destination, removed on drop unless installed.
#[derive(Debug)]
pub(crate) struct Candidate {
    path: PathBuf,
    installed: bool,
}

impl Candidate {
    /// Writes `content` to a fresh candidate for `destination` and syncs it.
    pub fn write(destination: &Path, content: &[u8], mode: Option<u32>) -> io::Result<Candidate> {
        let (path, mut file) = create(destination)?;
        // From here on, dropping the candidate removes the file.
        let candidate = Candidate { path, installed: false };
        let existing = fs::metadata(destination).ok();
        let permissions = match (mode, &existing) {
            (Some(mode), _) => Some(fs::Permissions::from_mode(mode)),
            (None, Some(existing)) => Some(existing.permissions()),
            (None, None) => None,
        };
        if let Some(permissions) = permissions {
            file.set_permissions(permissions)
                .map_err(|e| context(e, "setting permissions of", &candidate.path))?;
        }
        if let Some(existing) = &existing {
            // Only root may give a file away; anyone else keeps their own files' owner.
            if let Err(error) =
                std::os::unix::fs::fchown(&file, Some(existing.uid()), Some(existing.gid()))
            {
                tracing::debug!("keeping our owner for {}: {error}", candidate.path.display());
            }
        }
        file.write_all(content).map_err(|e| context(e, "writing", &candidate.path))?;
        file.sync_all().map_err(|e| context(e, "syncing", &candidate.path))?;
        Ok(candidate)
    }

    /// Where the candidate is, for `check_command`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the candidate over `destination`, then syncs the directory.
    pub fn install(mut self, destination: &Path) -> io::Result<()> {
        fs::rename(&self.path, destination).map_err(|e| {
            let what = format!("renaming {} to", self.path.display());
            context(e, &what, destination)
        })?;
        self.installed = true;
        let dir = directory_of(destination);
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| context(e, "syncing directory", dir))
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        if !self.installed {
            if let Err(error) = fs::remove_file(&self.path) {
                tracing::warn!("cannot remove the candidate {}: {error}", self.path.display());
            }
        }
    }
}

/// The directory holding `path` (absolute, so it has one).
fn directory_of(path: &Path) -> &Path {
    path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Creates `.<name>.rgap-<pid>-<n>.tmp` next to `destination`, exclusively.
fn create(destination: &Path) -> io::Result<(PathBuf, File)> {
    let dir = directory_of(destination);
    let name = destination.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{name}.rgap-{}-{n}.tmp", std::process::id()));
        // create_new: never follow a link or reuse a file someone else left there.
        match OpenOptions::new().write(true).create_new(true).mode(0o644).open(&path) {
            Ok(file) => return Ok((path, file)),
            // Left by an earlier process that had our pid: take the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(context(e, "cannot create a file in", dir)),
        }
    }
}

/// `e` with what was being done to which path in front of it, keeping its kind.
fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_candidate_sits_next_to_the_destination_until_installed() {
        let dir = tempfile::tempdir().unwrap();
        let destination = dir.path().join("haproxy.cfg");
        fs::write(&destination, "old\n").unwrap();
        let candidate = Candidate::write(&destination, b"new\n", None).unwrap();
        assert_eq!(candidate.path().parent(), Some(dir.path()));
        assert_eq!(fs::read_to_string(candidate.path()).unwrap(), "new\n");
        assert_eq!(fs::read_to_string(&destination).unwrap(), "old\n");
        candidate.install(&destination).unwrap();
        assert_eq!(fs::read_to_string(&destination).unwrap(), "new\n");
        assert_eq!(names(dir.path()), ["haproxy.cfg"]);
    }

    #[test]
    fn a_candidate_not_installed_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let destination = dir.path().join("out");
        let candidate = Candidate::write(&destination, b"x", None).unwrap();
        assert_eq!(names(dir.path()).len(), 1);
        drop(candidate);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn mode_is_set_or_kept() {
        let dir = tempfile::tempdir().unwrap();
        let destination = dir.path().join("out");
        fs::write(&destination, "old").unwrap();
        fs::set_permissions(&destination, fs::Permissions::from_mode(0o600)).unwrap();
        Candidate::write(&destination, b"a", None).unwrap().install(&destination).unwrap();
        let mode = || fs::metadata(&destination).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(), 0o600);
        Candidate::write(&destination, b"b", Some(0o640)).unwrap().install(&destination).unwrap();
        assert_eq!(mode(), 0o640);
    }
}
