//! Replacing a file so that no reader ever sees it half written: the new content goes to a
//! temporary file in the same directory (same filesystem, so `rename` is atomic), is synced,
//! then renamed over the target; the directory is synced last so the rename survives a crash.
//!
//! Readers see the old file or the new one, whole. The target's permissions are carried over
//! to its replacement. A symbolic link at the target is replaced by a regular file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Names temporary files apart within this process (the pid sets processes apart).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The directory that holds `path` (`path` is absolute, so it has one).
pub fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `content` atomically. Errors name the step and the file.
pub fn replace(path: &Path, content: &[u8]) -> io::Result<()> {
    let dir = directory_of(path);
    let (temp_path, mut temp) = create_temp(path)?;
    let written = (|| {
        if let Ok(existing) = fs::metadata(path) {
            temp.set_permissions(existing.permissions())
                .map_err(|e| context(e, "setting permissions of", &temp_path))?;
        }
        temp.write_all(content).map_err(|e| context(e, "writing", &temp_path))?;
        temp.sync_all().map_err(|e| context(e, "syncing", &temp_path))?;
        drop(temp);
        fs::rename(&temp_path, path).map_err(|e| {
            let what = format!("renaming {} to", temp_path.display());
            context(e, &what, path)
        })
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp_path);
    }
    written?;
    File::open(dir)
        .and_then(|dir_file| dir_file.sync_all())
        .map_err(|e| context(e, "syncing directory", dir))
}

/// Checks that files can be created next to `path`, by creating and removing one.
pub fn check_writable(path: &Path) -> io::Result<()> {
    let (temp_path, temp) = create_temp(path)?;
    drop(temp);
    fs::remove_file(&temp_path).map_err(|e| context(e, "removing", &temp_path))
}

/// Creates a fresh, exclusive temporary file next to `path`: `.<name>.rgap-<pid>-<n>.tmp`.
fn create_temp(path: &Path) -> io::Result<(PathBuf, File)> {
    let dir = directory_of(path);
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp_path = dir.join(format!(".{name}.rgap-{}-{n}.tmp", std::process::id()));
        // create_new: never follow a link or reuse a file someone else left there.
        match OpenOptions::new().write(true).create_new(true).mode(0o644).open(&temp_path) {
            Ok(file) => return Ok((temp_path, file)),
            // Left over by an earlier process with our pid: try the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < u64::MAX => continue,
            Err(e) => {
                return Err(context(e, "cannot create a file in", dir));
            }
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

    #[test]
    fn replaces_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        replace(&path, b"one\n").unwrap();
        replace(&path, b"two\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        let names: Vec<_> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("hosts")]);
    }

    #[test]
    fn keeps_the_permissions_of_the_file_it_replaces() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        replace(&path, b"new").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_missing_directory_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("hosts");
        let error = check_writable(&path).unwrap_err().to_string();
        assert!(error.contains(&dir.path().join("absent").display().to_string()), "{error}");
        let error = replace(&path, b"x").unwrap_err().to_string();
        assert!(error.starts_with("cannot create a file in"), "{error}");
    }
}
