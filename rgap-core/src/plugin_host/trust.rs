//! Which plugin files rgap agrees to load. Loading a shared object runs its code with all of
//! rgap's privileges, so a file (or a directory on the search path) that someone else could
//! have written is refused, as sudo refuses a sudoers file others can write: the owner must
//! be root or the user rgap runs as, and neither group nor others may write. A symlink is
//! judged by its target and by the directory holding the link.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a file or directory is not trusted; one line naming it, its owner and mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing {what} {path}: {why} (owner {owner}, mode {mode:04o}); {fix}")]
pub struct Untrusted {
    pub what: &'static str,
    pub path: PathBuf,
    pub why: &'static str,
    pub owner: String,
    pub mode: u32,
    pub fix: &'static str,
}

/// Checks the plugin file at `path` (following a symlink to its target) and the directory
/// that holds it (the link's directory, for a symlink).
pub fn check_plugin_file(path: &Path) -> Result<(), Untrusted> {
    let euid = nix::unistd::geteuid().as_raw();
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        if let Ok(metadata) = std::fs::metadata(dir) {
            judge("plugin directory", dir, &metadata, euid)?;
        }
    }
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    match std::fs::metadata(&target) {
        Ok(metadata) => judge("plugin file", &target, &metadata, euid),
        // Not readable: the loader says why in its own words.
        Err(_) => Ok(()),
    }
}

fn judge(what: &'static str, path: &Path, metadata: &Metadata, euid: u32) -> Result<(), Untrusted> {
    let mode = metadata.mode() & 0o7777;
    let uid = metadata.uid();
    let refuse = |why, fix| Untrusted {
        what,
        path: path.to_path_buf(),
        why,
        owner: owner_name(uid),
        mode,
        fix,
    };
    if uid != 0 && uid != euid {
        return Err(refuse(
            "owned by another user",
            "only root or the user rgap runs as may own plugins",
        ));
    }
    if mode & 0o002 != 0 {
        return Err(refuse("writable by others", "chmod o-w it"));
    }
    if mode & 0o020 != 0 {
        return Err(refuse("writable by its group", "chmod g-w it"));
    }
    Ok(())
}

/// `name(uid)` when the user is known, else the uid.
fn owner_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("{}({uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

/// Whether the kernel says this process runs with privileges its caller may not have
/// (setuid, setgid or file capabilities): then the caller's environment is not trusted.
pub fn is_secure_execution() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector the kernel gave this process.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn group_or_world_writable_files_and_directories_are_refused_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o755);
        let file = dir.path().join("librgap_output_x.so");
        std::fs::write(&file, b"not really").unwrap();
        set_mode(&file, 0o644);
        assert_eq!(check_plugin_file(&file), Ok(()));

        set_mode(&file, 0o666);
        let error = check_plugin_file(&file).unwrap_err().to_string();
        assert!(error.contains("writable by others") && error.contains("mode 0666"), "{error}");

        set_mode(&file, 0o644);
        set_mode(dir.path(), 0o775);
        let error = check_plugin_file(&file).unwrap_err().to_string();
        assert!(error.contains("plugin directory"), "{error}");
        assert!(error.contains("writable by its group") && error.contains("mode 0775"), "{error}");
    }

    #[test]
    fn a_symlink_is_judged_by_its_target_and_the_directory_of_the_link() {
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o755);
        let target = dir.path().join("real.so");
        std::fs::write(&target, b"x").unwrap();
        set_mode(&target, 0o666);
        let link = dir.path().join("librgap_output_x.so");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = check_plugin_file(&link).unwrap_err();
        assert_eq!(error.path, std::fs::canonicalize(&target).unwrap());
        assert_eq!(error.mode, 0o666);
    }

    #[test]
    fn this_test_is_not_run_setuid() {
        assert!(!is_secure_execution());
    }
}
