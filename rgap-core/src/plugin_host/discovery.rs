//! Where plugin files are looked for, in order: each directory of `RGAP_PLUGIN_PATH`
//! (colon-separated), the config's `plugin_dirs`, the directory of the running executable
//! (so a `cargo build` tree works without installing), then `/usr/lib/rgap/plugins`.

use std::path::{Path, PathBuf};

use rgap_plugin_api::plugin_file_name;

/// The system-wide plugin directory, searched last.
pub const SYSTEM_PLUGIN_DIR: &str = "/usr/lib/rgap/plugins";

/// The environment variable naming extra plugin directories, searched first.
pub const PLUGIN_PATH_ENV: &str = "RGAP_PLUGIN_PATH";

/// The directories to search, in order, without duplicates. `RGAP_PLUGIN_PATH` is ignored
/// (with a warning) when rgap runs with more privileges than its caller: whoever set the
/// environment must not choose the code rgap loads.
pub fn search_dirs(config_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut from_env = std::env::var_os(PLUGIN_PATH_ENV).unwrap_or_default();
    if !from_env.is_empty() && super::trust::is_secure_execution() {
        tracing::warn!(
            "ignoring {PLUGIN_PATH_ENV}: rgap runs with elevated privileges (setuid, setgid or \
             file capabilities)"
        );
        from_env = Default::default();
    }
    let mut dirs: Vec<PathBuf> =
        std::env::split_paths(&from_env).filter(|dir| !dir.as_os_str().is_empty()).collect();
    dirs.extend(config_dirs.iter().cloned());
    if let Some(exe_dir) =
        std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir);
    }
    dirs.push(PathBuf::from(SYSTEM_PLUGIN_DIR));
    let mut unique = Vec::with_capacity(dirs.len());
    for dir in dirs {
        if !unique.contains(&dir) {
            unique.push(dir);
        }
    }
    unique
}

/// The first file for `kind` in `dirs`, if any.
pub fn find_plugin(kind: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    let file_name = plugin_file_name(kind);
    dirs.iter().map(|dir| dir.join(&file_name)).find(|path| path.is_file())
}

/// The kind a plugin file name stands for: `librgap_output_<kind>.so` → `<kind>`.
pub fn kind_of_file(path: &Path) -> Option<&str> {
    path.file_name()?.to_str()?.strip_prefix("librgap_output_")?.strip_suffix(".so")
}

/// Every plugin file in `dir`, sorted by name; empty if the directory cannot be read.
pub fn plugin_files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| kind_of_file(path).is_some() && path.is_file())
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_taken_from_the_file_name() {
        assert_eq!(kind_of_file(Path::new("/x/librgap_output_dns.so")), Some("dns"));
        assert_eq!(kind_of_file(Path::new("/x/libz.so")), None);
        assert_eq!(kind_of_file(Path::new("/x/librgap_output_dns.so.1")), None);
    }

    #[test]
    fn config_dirs_come_before_the_executable_and_system_dirs() {
        let dirs = search_dirs(&[PathBuf::from("/opt/a"), PathBuf::from("/opt/a")]);
        let position = |p: &str| dirs.iter().position(|d| d == Path::new(p));
        assert_eq!(dirs.iter().filter(|d| d.as_path() == Path::new("/opt/a")).count(), 1);
        assert!(position("/opt/a") < position(SYSTEM_PLUGIN_DIR));
        assert_eq!(dirs.last().map(PathBuf::as_path), Some(Path::new(SYSTEM_PLUGIN_DIR)));
    }
}
