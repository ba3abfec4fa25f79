//! Replacing a file so that no reader ever sees it half written: the new content goes to a
//! temporary file in the same directory (same filesystem, so `rename` is atomic), is synced,
//! then renamed over the target; the directory is synced last so the rename survives a crash.
//!
//! Readers see the old file or the new one, whole. The target is judged without following a
//! link (as `install(1)` does): a regular file hands its permissions, owner and group on to its
//! replacement; a symbolic link, or anything else, is replaced by a regular file with the
//! default mode, and what it points to is neither read for metadata nor written.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rgap_plugin_kit::pacing::thread_cpu_time;

/// Names temporary files apart within this process (the pid sets processes apart).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The mode of a file that replaces no regular file, when the spec sets none.
pub const DEFAULT_MODE: u32 = 0o644;

/// The directory that holds `path` (`path` is absolute, so it has one).
pub(crate) fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `content` (its pieces one after the other) atomically. The new file
/// gets `mode` if set, else the mode of the regular file it replaces, else [`DEFAULT_MODE`].
/// Errors name the step and the file. Returns the CPU time this thread spent copying the
/// content into the file: what grows with its size, unlike the syncs and the rename, which
/// mostly wait for the disk.
pub fn replace(path: &Path, content: &[&[u8]], mode: Option<u32>) -> io::Result<Duration> {
    let dir = directory_of(path);
    // Not `fs::metadata`: a link planted at the target must not lend us its target's mode.
    let existing = fs::symlink_metadata(path).ok().filter(|m| m.file_type().is_file());
    let mode = mode
        .or_else(|| existing.as_ref().map(|m| m.permissions().mode() & 0o777))
        .unwrap_or(DEFAULT_MODE);
    let (temp_path, mut temp) = create_temp(path)?;
    let written = (|| -> io::Result<Duration> {
        if let Some(existing) = &existing {
            keep_owner(&temp, existing).map_err(|e| {
                let what = format!(
                    "giving {} the owner {}:{} of",
                    temp_path.display(),
                    existing.uid(),
                    existing.gid()
                );
                context(e, &what, path)
            })?;
        }
        // After any chown, which may clear set-id bits; explicit, so the umask plays no part.
        temp.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| context(e, "setting permissions of", &temp_path))?;
        let started = thread_cpu_time();
        write_pieces(&mut temp, content).map_err(|e| context(e, "writing", &temp_path))?;
        let copied = thread_cpu_time().saturating_sub(started);
        temp.sync_all().map_err(|e| context(e, "syncing", &temp_path))?;
        drop(temp);
        fs::rename(&temp_path, path).map_err(|e| {
            let what = format!("renaming {} to", temp_path.display());
            context(e, &what, path)
        })?;
        Ok(copied)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp_path);
    }
    let copied = written?;
    File::open(dir)
        .and_then(|dir_file| dir_file.sync_all())
        .map_err(|e| context(e, "syncing directory", dir))?;
    Ok(copied)
}

/// Writes `pieces` in order, as many at a time as one `writev` takes: the text is kept in
/// chunks, which are written where they lie instead of being copied together first.
fn write_pieces(file: &mut File, pieces: &[&[u8]]) -> io::Result<()> {
    /// `IOV_MAX` on Linux.
    const MAX_SLICES: usize = 1024;
    let (mut next, mut skip) = (0, 0);
    while next < pieces.len() {
        let end = pieces.len().min(next + MAX_SLICES);
        let mut slices: Vec<io::IoSlice<'_>> =
            pieces[next..end].iter().map(|piece| io::IoSlice::new(piece)).collect();
        slices[0] = io::IoSlice::new(&pieces[next][skip..]);
        let mut written = match file.write_vectored(&slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => written,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // Past the pieces written whole, then into the one written in part.
        while next < pieces.len() && written >= pieces[next].len() - skip {
            written -= pieces[next].len() - skip;
            next += 1;
            skip = 0;
        }
        skip += written;
    }
    Ok(())
}

/// Gives `temp` the owner and group of the file it replaces, as logrotate and `install -C` do:
/// a user's file stays the user's even when root rewrites it. Only root can give a file away,
/// so as another user only the group is kept, where allowed, and nothing else is attempted.
fn keep_owner(temp: &File, existing: &Metadata) -> io::Result<()> {
    let ours = temp.metadata()?;
    if (ours.uid(), ours.gid()) == (existing.uid(), existing.gid()) {
        return Ok(());
    }
    // A file we just created is owned by our filesystem uid: 0 means we act as root.
    if ours.uid() == 0 {
        std::os::unix::fs::fchown(temp, Some(existing.uid()), Some(existing.gid()))
    } else {
        // Allowed only for a group we are in; otherwise the file stays ours, as it was before.
        let _ = std::os::unix::fs::fchown(temp, None, Some(existing.gid()));
        Ok(())
    }
}

/// Checks that files can be created next to `path`, by creating and removing one.
pub fn check_writable(path: &Path) -> io::Result<()> {
    let (temp_path, temp) = create_temp(path)?;
    drop(temp);
    fs::remove_file(&temp_path).map_err(|e| context(e, "removing", &temp_path))
}

/// Creates a fresh, exclusive temporary file next to `path`: `.<name>.rgap-<pid>-<n>.tmp`
/// (see [`stale_temp_pid`], which recognises these names).
fn create_temp(path: &Path) -> io::Result<(PathBuf, File)> {
    let dir = directory_of(path);
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp_path = dir.join(format!(".{name}.rgap-{}-{n}.tmp", std::process::id()));
        // create_new: never follow a link or reuse a file someone else left there. Private
        // until its owner and mode are set.
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp_path) {
            Ok(file) => return Ok((temp_path, file)),
            // Left over by an earlier process with our pid: try the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < u64::MAX => continue,
            Err(e) => {
                return Err(context(e, "cannot create a file in", dir));
            }
        }
    }
}

/// The pid in `file_name` if it is one of our temporary names for the target `target_name`
/// (`.<target_name>.rgap-<pid>-<n>.tmp`, digits only), else `None`.
fn stale_temp_pid(file_name: &[u8], target_name: &[u8]) -> Option<u32> {
    let rest = file_name.strip_prefix(b".")?.strip_prefix(target_name)?;
    let numbers = rest.strip_prefix(b".rgap-")?.strip_suffix(b".tmp")?;
    let dash = numbers.iter().position(|&b| b == b'-')?;
    let (pid, n) = (&numbers[..dash], &numbers[dash + 1..]);
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if !digits(pid) || !digits(n) {
        return None;
    }
    std::str::from_utf8(pid).ok()?.parse().ok()
}

/// Removes the temporary files a killed run left next to `path`: regular files with one of
/// our names for this very target, made by a process that no longer exists. Anything else
/// (another name, a link, a directory, a file of a live process such as a second listener
/// writing the same file) is left alone. Returns the files removed; a directory that cannot
/// be listed yields none.
pub fn remove_stale_temps(path: &Path) -> Vec<PathBuf> {
    let Some(target_name) = path.file_name() else { return vec![] };
    let Ok(entries) = fs::read_dir(directory_of(path)) else { return vec![] };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = stale_temp_pid(entry.file_name().as_bytes(), target_name.as_bytes()) else {
            continue;
        };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        // The entry's own type: a link is not followed, and not removed either.
        if entry.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
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
        replace(&path, &[b"one\n".as_slice()], None).unwrap();
        replace(&path, &[b"two\n".as_slice()], None).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        let names: Vec<_> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("hosts")]);
    }

    #[test]
    fn more_pieces_than_one_writev_takes_are_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        let lines: Vec<String> =
            (0..3000).map(|n| format!("10.0.{}.{} w{n}\n", n / 256, n % 256)).collect();
        let mut pieces: Vec<&[u8]> = lines.iter().map(|line| line.as_bytes()).collect();
        pieces.insert(1500, b"");
        replace(&path, &pieces, None).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), lines.concat());
    }

    #[test]
    fn keeps_the_permissions_of_the_file_it_replaces() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        replace(&path, &[b"new".as_slice()], None).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_missing_directory_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("hosts");
        let error = check_writable(&path).unwrap_err().to_string();
        assert!(error.contains(&dir.path().join("absent").display().to_string()), "{error}");
        let error = replace(&path, &[b"x".as_slice()], None).unwrap_err().to_string();
        assert!(error.starts_with("cannot create a file in"), "{error}");
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_link_at_the_target_is_replaced_with_a_default_mode_file_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, "precious\n").unwrap();
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o666)).unwrap();
        let path = dir.path().join("hosts");
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        replace(&path, &[b"new\n".as_slice()], None).unwrap();
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
        assert_eq!(mode_of(&path), DEFAULT_MODE);
        assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "precious\n");
        assert_eq!(mode_of(&elsewhere), 0o666);
    }

    #[test]
    fn a_configured_mode_wins_and_set_id_bits_are_never_carried_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        replace(&path, &[b"a".as_slice()], Some(0o640)).unwrap();
        assert_eq!(mode_of(&path), 0o640);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o4755)).unwrap();
        replace(&path, &[b"b".as_slice()], None).unwrap();
        assert_eq!(mode_of(&path), 0o755);
        replace(&path, &[b"c".as_slice()], Some(0o600)).unwrap();
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn only_our_own_temporary_names_for_the_target_are_recognised() {
        let pid = |name: &str| stale_temp_pid(name.as_bytes(), b"hosts");
        assert_eq!(pid(".hosts.rgap-123-0.tmp"), Some(123));
        assert_eq!(pid(".hosts.rgap-99999999-17.tmp"), Some(99_999_999));
        for other in [
            "hosts",
            ".hosts",
            "hosts.rgap-123-0.tmp",
            ".hosts.rgap-123-0.tmp~",
            ".hosts.rgap-123.tmp",
            ".hosts.rgap--0.tmp",
            ".hosts.rgap-12a-0.tmp",
            ".hosts.rgap-123-.tmp",
            ".hosts.bak.rgap-123-0.tmp",
            ".other.rgap-123-0.tmp",
            ".hosts.rgap-123-0-1.tmp",
        ] {
            assert_eq!(pid(other), None, "{other}");
        }
    }

    #[test]
    fn stale_temporary_files_of_dead_processes_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        // No pid reaches 99999999 (pid_max is at most 2^22); ours is alive.
        let stale = dir.path().join(".hosts.rgap-99999999-3.tmp");
        let live = dir.path().join(format!(".hosts.rgap-{}-0.tmp", std::process::id()));
        let unrelated = dir.path().join(".hosts.rgap-backup");
        let as_dir = dir.path().join(".hosts.rgap-99999999-4.tmp");
        for file in [&stale, &live, &unrelated] {
            fs::write(file, "x").unwrap();
        }
        fs::create_dir(&as_dir).unwrap();
        assert_eq!(remove_stale_temps(&path), vec![stale.clone()]);
        assert!(!stale.exists());
        assert!(live.exists() && unrelated.exists() && as_dir.is_dir());
    }
}
