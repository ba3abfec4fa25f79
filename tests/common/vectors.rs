//! The shared test vectors (`announcements.txt`, `leaves.txt`), found as rgap-core's own
//! vector tests find them: beside `$RGAP_VECTORS` (which names `announcements.txt`), else
//! the shared vectors beside the repository, else the copy in `testdata/` (for a clone
//! tested on its own).

use std::path::PathBuf;

/// Where the vectors file `name` is.
pub fn vectors_path(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os("RGAP_VECTORS") {
        return PathBuf::from(path).with_file_name(name);
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = repo.join("../shared/vectors").join(name);
    if shared.is_file() {
        shared
    } else {
        repo.join("testdata/vectors").join(name)
    }
}

/// One `key=value` of a `[section]` of the vectors file `name`.
pub fn vector_field(name: &str, section: &str, key: &str) -> String {
    let path = vectors_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set RGAP_VECTORS)", path.display()));
    let mut in_section = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == format!("[{section}]");
        } else if let Some(value) = line.strip_prefix(&format!("{key}=")) {
            if in_section {
                return value.to_string();
            }
        }
    }
    panic!("{}: no {key} in [{section}]", path.display())
}
