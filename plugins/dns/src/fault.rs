//! Fault injection for tests, compiled only with the `fault-injection` feature: a build
//! without it (every build rgap ships) rejects the spec key as unknown.
//!
//! `fault_injection: {panic_if_file_exists: PATH}` makes the next `on_snapshot` after `PATH`
//! appears remove it and panic, so that a test can make a real dns output panic at a moment
//! it chooses, once (the instance re-created from the same spec finds no file), and watch
//! the host drop and re-create it.

use std::path::PathBuf;

use serde::Deserialize;

/// `fault_injection:` as written in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    panic_if_file_exists: PathBuf,
}

impl FaultSpec {
    /// Panics if the trigger file exists, removing it first. Removing is the test: of two
    /// calls racing for one file, only one panics.
    pub fn check(&self) {
        let trigger = &self.panic_if_file_exists;
        if std::fs::remove_file(trigger).is_ok() {
            panic!("fault injection: {} existed", trigger.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_once_when_the_file_appears() {
        let dir = std::env::temp_dir().join(format!("rgap-dns-fault-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fault = FaultSpec { panic_if_file_exists: dir.join("trigger") };
        fault.check();
        std::fs::write(dir.join("trigger"), "").unwrap();
        let panic = std::panic::catch_unwind(|| fault.check()).expect_err("a panic");
        let message = panic.downcast_ref::<String>().expect("a formatted message");
        assert!(message.starts_with("fault injection: "), "{message}");
        assert!(!dir.join("trigger").exists());
        fault.check();
        std::fs::remove_dir(&dir).unwrap();
    }
}
