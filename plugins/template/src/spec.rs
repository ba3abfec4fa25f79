//! The `spec:` of a `template` output and its checks. [`validate_spec`] makes every check
//! that needs no side effect (keys, durations, commands, the template's syntax, the source
//! file, the destination's directory), so it can serve both `create` and a dry run of the
//! config; it writes nothing and starts nothing.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::{access, AccessFlags};
use rgap_plugin_api::duration::GoDuration;
use rgap_plugin_api::BoxError;
use serde::Deserialize;

use crate::render::Template;

/// The placeholder in `check_command` that stands for the candidate file.
pub(crate) const FILE_PLACEHOLDER: &str = "{file}";

/// Default for `command_timeout`.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// `spec:` of a `template` output, as written in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// The template file (Jinja2 syntax); relative to the config file's directory.
    source: PathBuf,
    /// The file to keep rendered; relative to the config file's directory.
    destination: PathBuf,
    /// The groups the template uses; absent means every group of the listener.
    #[serde(default)]
    groups: Option<Vec<u64>>,
    /// Quiescence before rendering a change.
    #[serde(default)]
    wait: Option<WaitSpec>,
    /// Run on the candidate file before it replaces the destination.
    #[serde(default)]
    check_command: Option<Vec<String>>,
    /// Run after the destination was replaced.
    #[serde(default)]
    reload_command: Option<Vec<String>>,
    #[serde(default)]
    command_timeout: Option<GoDuration>,
    /// Octal permissions of the destination, e.g. "0644".
    #[serde(default)]
    mode: Option<String>,
}

/// `wait: {min, max}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitSpec {
    min: GoDuration,
    /// Absent: four times `min` (as consul-template).
    #[serde(default)]
    max: Option<GoDuration>,
}

/// Render when no change came for `min`, or `max` after the first pending change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wait {
    pub min: Duration,
    pub max: Duration,
}

/// A spec that passed every check, with its paths resolved and its template compiled.
#[derive(Debug)]
pub(crate) struct Validated {
    pub destination: PathBuf,
    pub template: Template,
    /// `None`: every group.
    pub groups: Option<BTreeSet<u64>>,
    pub wait: Option<Wait>,
    pub check_command: Option<Vec<String>>,
    pub reload_command: Option<Vec<String>>,
    pub command_timeout: Duration,
    pub mode: Option<u32>,
}

/// Checks `spec` without side effects; relative paths are taken from `base_dir`.
pub(crate) fn validate_spec(spec: TemplateSpec, base_dir: &Path) -> Result<Validated, BoxError> {
    let source = resolve("spec.source", &spec.source, base_dir)?;
    let destination = resolve("spec.destination", &spec.destination, base_dir)?;
    let text = std::fs::read_to_string(&source)
        .map_err(|e| format!("spec.source: cannot read the template {}: {e}", source.display()))?;
    let template = Template::compile(&source, text)?;
    check_destination(&destination)?;

    let groups = match spec.groups {
        None => None,
        Some(list) if list.is_empty() => {
            return Err("spec.groups: must list at least one group id (leave it out to use \
                        every group)"
                .into())
        }
        Some(list) => Some(list.into_iter().collect()),
    };
    let wait = spec.wait.map(check_wait).transpose()?;
    let check_command = spec.check_command.map(|argv| check_argv("check_command", argv));
    let check_command = check_command.transpose()?;
    if let Some(argv) = &check_command {
        if !argv.iter().any(|arg| arg.contains(FILE_PLACEHOLDER)) {
            return Err(format!(
                "spec.check_command: no argument contains {FILE_PLACEHOLDER}, so the command \
                 cannot see the candidate file (e.g. [haproxy, -c, -f, \"{FILE_PLACEHOLDER}\"])"
            )
            .into());
        }
    }
    let reload_command = spec.reload_command.map(|argv| check_argv("reload_command", argv));
    let command_timeout = spec.command_timeout.map_or(DEFAULT_COMMAND_TIMEOUT, GoDuration::get);
    if command_timeout.is_zero() {
        return Err("spec.command_timeout: must be greater than 0 (e.g. 30s)".into());
    }
    let mode = spec.mode.as_deref().map(parse_mode).transpose()?;
    Ok(Validated {
        destination,
        template,
        groups,
        wait,
        check_command,
        reload_command: reload_command.transpose()?,
        command_timeout,
        mode,
    })
}

fn resolve(key: &str, path: &Path, base_dir: &Path) -> Result<PathBuf, BoxError> {
    if path.as_os_str().is_empty() {
        return Err(format!("{key}: must not be empty").into());
    }
    Ok(base_dir.join(path))
}

/// The destination is replaced by renaming a file created next to it, so what matters is
/// that its directory exists and lets us create files; the file itself may be absent.
fn check_destination(destination: &Path) -> Result<(), BoxError> {
    let shown = destination.display();
    if destination.is_dir() {
        return Err(format!("spec.destination: {shown} is a directory").into());
    }
    let dir = destination.parent().filter(|dir| !dir.as_os_str().is_empty());
    let Some(dir) = dir else {
        return Err(format!("spec.destination: {shown} has no directory").into());
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(format!("spec.destination: {} is not a directory", dir.display()).into())
        }
        Err(e) => {
            return Err(format!(
                "spec.destination: directory {} of {shown}: {e} (create it first)",
                dir.display()
            )
            .into())
        }
    }
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| {
        format!(
            "spec.destination: cannot create files in {} (needed to replace {shown} \
             atomically): {}",
            dir.display(),
            std::io::Error::from(e)
        )
    })?;
    Ok(())
}

fn check_wait(wait: WaitSpec) -> Result<Wait, BoxError> {
    let min = wait.min.get();
    if min.is_zero() {
        return Err("spec.wait.min: must be greater than 0 (e.g. 200ms), or leave out wait".into());
    }
    let max = wait.max.map_or(min.saturating_mul(4), GoDuration::get);
    if max < min {
        return Err(format!(
            "spec.wait.max: {} is less than wait.min {}",
            GoDuration(max),
            GoDuration(min)
        )
        .into());
    }
    Ok(Wait { min, max })
}

/// A command is an argv list: program first, no shell. A program without a `/` must be
/// found in `PATH` now, so a typo is a start error, not an error at every change.
fn check_argv(key: &str, argv: Vec<String>) -> Result<Vec<String>, BoxError> {
    let Some(program) = argv.first() else {
        return Err(format!(
            "spec.{key}: must name the program to run, then its arguments (a list, e.g. \
             [systemctl, reload, haproxy])"
        )
        .into());
    };
    if program.is_empty() {
        return Err(format!("spec.{key}[0]: the program must not be empty").into());
    }
    if !program.contains('/') && find_in_path(program).is_none() {
        return Err(format!("spec.{key}[0]: {program} not found in PATH").into());
    }
    Ok(argv)
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| {
        std::fs::metadata(candidate)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

/// "0644" or "644" → 0o644.
fn parse_mode(text: &str) -> Result<u32, BoxError> {
    u32::from_str_radix(text, 8).ok().filter(|mode| *mode <= 0o7777 && !text.is_empty()).ok_or_else(
        || format!("spec.mode: {text:?} is not an octal file mode (e.g. \"0644\")").into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rgap_plugin_api::decode_spec;

    /// A directory with a valid template `t.j2`.
    fn base() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.j2"), "{{ now }}\n").unwrap();
        dir
    }

    fn validate(dir: &Path, yaml: &str) -> Result<Validated, String> {
        let spec: TemplateSpec = decode_spec(yaml).map_err(|e| e.to_string())?;
        validate_spec(spec, dir).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_relative_paths() {
        let dir = base();
        let valid = validate(dir.path(), "source: t.j2\ndestination: out.cfg\n").unwrap();
        assert_eq!(valid.template.path(), dir.path().join("t.j2"));
        assert_eq!(valid.destination, dir.path().join("out.cfg"));
        assert_eq!(valid.command_timeout, Duration::from_secs(30));
        assert_eq!((valid.groups, valid.wait, valid.mode), (None, None, None));
        assert!(!dir.path().join("out.cfg").exists(), "validation writes nothing");
    }

    #[test]
    fn every_key_is_read() {
        let dir = base();
        let valid = validate(
            dir.path(),
            "source: t.j2\ndestination: out.cfg\ngroups: [2000, 1000]\n\
             wait: {min: 200ms, max: 2s}\ncheck_command: [sh, -c, 'test -s \"$0\"', '{file}']\n\
             reload_command: ['true']\ncommand_timeout: 5s\nmode: \"0640\"\n",
        )
        .unwrap();
        assert_eq!(valid.groups, Some(BTreeSet::from([1000, 2000])));
        let wait = Wait { min: Duration::from_millis(200), max: Duration::from_secs(2) };
        assert_eq!(valid.wait, Some(wait));
        assert_eq!(valid.command_timeout, Duration::from_secs(5));
        assert_eq!(valid.mode, Some(0o640));
        let valid = validate(dir.path(), "source: t.j2\ndestination: o\nwait: {min: 1s}\n");
        assert_eq!(valid.unwrap().wait.unwrap().max, Duration::from_secs(4));
    }

    #[test]
    fn mistakes_name_their_key() {
        let dir = base();
        let cases = [
            ("source: t.j2\ndestination: o\nwiat: {min: 1s}\n", "spec.wiat: unknown field"),
            (
                "source: t.j2\ndestination: o\nwait: {min: 2s, max: 1s}\n",
                "spec.wait.max: 1s is less",
            ),
            ("source: t.j2\ndestination: o\nwait: {min: 0s}\n", "spec.wait.min: must be greater"),
            ("source: t.j2\ndestination: o\ngroups: []\n", "spec.groups: must list"),
            ("source: t.j2\ndestination: o\nmode: rw-r--r--\n", "spec.mode: \"rw-r--r--\""),
            ("source: t.j2\ndestination: o\ncommand_timeout: 0s\n", "spec.command_timeout"),
            ("source: t.j2\ndestination: o\ncheck_command: []\n", "spec.check_command: must name"),
            (
                "source: t.j2\ndestination: o\ncheck_command: ['true']\n",
                "no argument contains {file}",
            ),
            (
                "source: t.j2\ndestination: o\nreload_command: [no-such-prog-x]\n",
                "spec.reload_command[0]: no-such-prog-x not found in PATH",
            ),
            ("source: missing.j2\ndestination: o\n", "spec.source: cannot read the template"),
            ("source: t.j2\ndestination: nodir/o\n", "spec.destination: directory"),
            ("source: t.j2\ndestination: t.j2/o\n", "is not a directory"),
            ("source: t.j2\ndestination: .\n", "is a directory"),
            ("destination: o\n", "missing field `source`"),
        ];
        for (yaml, expected) in cases {
            let error = validate(dir.path(), yaml).unwrap_err();
            assert!(error.contains(expected), "{yaml:?}: {error}");
        }
    }
}
