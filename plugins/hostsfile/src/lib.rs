//! `hostsfile`: keeps a hosts(5) file listing the live members of mapped groups, as the Go
//! rgap's output of that name did.
//!
//! The file is the prepend lines, then per mapping one `<ip> <hostname>` line per member, or
//! the mapping's fallback addresses (`<ip> <hostname> # fallback address used!`) while its
//! group is empty, then the append lines. It is replaced atomically ([`atomic`]) within
//! milliseconds of a change and checked every `interval` ([`writer`]); it is not written at
//! all until every mapped group is ready.

mod atomic;
mod diff;
mod hosts_text;
mod mapped;
mod render;
mod writer;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rgap_plugin_api::duration::GoDuration;
use rgap_plugin_api::{export_output, BoxError, GroupSnapshot, HostHandle, OutputPlugin};
use serde::{Deserialize, Deserializer};

use mapped::{MappedGroups, Outcome};
use render::{Layout, Mapping, Waiting};
use writer::Writer;

/// `spec:` of a `hostsfile` output (the Go rgap's keys).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFileSpec {
    /// How often the file on disk is checked and, if it differs, rewritten.
    interval: GoDuration,
    /// The hosts file; relative to the listener's working directory.
    filename: PathBuf,
    #[serde(default, deserialize_with = "null_as_empty")]
    mappings: Vec<MappingSpec>,
    #[serde(default, deserialize_with = "null_as_empty")]
    prepend_lines: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    append_lines: Vec<String>,
    /// Permissions of every file written, e.g. "0640"; absent: those of the regular file
    /// being replaced, or 0644.
    #[serde(default)]
    mode: Option<FileMode>,
}

/// `mode:` as octal digits: `0640` (YAML reads a leading zero as text) or quoted, `"644"`. A
/// bare `644` reaches us as a decimal number, and `0o640` as 416: numbers are refused rather
/// than guessed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileMode(u32);

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FileMode, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FileMode;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("permissions as a quoted octal string, e.g. \"0640\"")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<FileMode, E> {
                let digits = text.strip_prefix("0o").unwrap_or(text);
                match u32::from_str_radix(digits, 8) {
                    Ok(mode) if mode <= 0o777 && (3..=4).contains(&digits.len()) => {
                        Ok(FileMode(mode))
                    }
                    _ => Err(E::custom(format!(
                        "{text:?} is not a file mode: write three or four octal digits up to \
                         0777, e.g. \"0640\""
                    ))),
                }
            }

            fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<FileMode, E> {
                Err(E::custom(format!(
                    "{number} is read as a decimal number; write the mode as octal digits with \
                     a leading zero or quoted, e.g. 0640 or \"640\""
                )))
            }

            fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<FileMode, E> {
                self.visit_u64(number.unsigned_abs())
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// One entry of `mappings`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingSpec {
    group: u64,
    hostname: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    fallback_addresses: Vec<IpAddr>,
}

/// A key written with no value (`prepend_lines:`) means an empty list, as it did in Go.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

struct HostsFile {
    path: PathBuf,
    layout: Arc<Layout>,
    /// The mapped groups as last seen: which changed, whether all are ready.
    mapped: MappedGroups,
    /// Why the file is not being written, as last logged.
    waiting: Option<Waiting>,
    writer: Writer,
}

impl OutputPlugin for HostsFile {
    const KIND: &'static str = "hostsfile";
    const DESCRIPTION: &'static str =
        "Keeps a hosts file with an <ip> <hostname> line per group member, written atomically";
    // Snapshots only: events are answered without entering the plugin.
    const WANTS_EVENTS: bool = false;
    type Spec = HostsFileSpec;

    fn validate(spec: &HostsFileSpec, _host: &HostHandle) -> Result<(), BoxError> {
        let (path, _) = checked(spec)?;
        // Without creating anything: the directory exists and we may write in it.
        let dir = atomic::directory_of(&path);
        nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK)
            .map_err(|e| format!("spec.filename: cannot write in {}: {e}", dir.display()))?;
        Ok(())
    }

    fn create(spec: HostsFileSpec, host: HostHandle) -> Result<Self, BoxError> {
        let (path, layout) = checked(&spec)?;
        let interval = spec.interval.get();
        atomic::check_writable(&path)
            .map_err(|e| format!("spec.filename: cannot write {}: {e}", path.display()))?;
        for stale in atomic::remove_stale_temps(&path) {
            tracing::info!("removed {}, left by an earlier run that was killed", stale.display());
        }
        let layout = Arc::new(layout);
        let mode = spec.mode.map(|FileMode(mode)| mode);
        let metrics = writer::Metrics {
            writes: host.counter("writes_total", "Hosts file rewrites", &[]).with_labels(&[]),
            write_errors: host
                .counter("write_errors_total", "Hosts file rewrites that failed", &[])
                .with_labels(&[]),
        };
        let writer = Writer::spawn(path.clone(), mode, interval, layout.clone(), host, metrics)?;
        Ok(HostsFile { path, mapped: MappedGroups::new(&layout), layout, waiting: None, writer })
    }

    fn on_snapshot(&mut self, groups: &[GroupSnapshot<'_>]) -> Result<(), BoxError> {
        match self.mapped.update(&self.layout, groups) {
            Outcome::Unchanged => {}
            Outcome::Ready(lists) => {
                if self.waiting.take().is_some() {
                    tracing::info!("every mapped group is ready: writing {}", self.path.display());
                }
                // Editing the text is the writer's job, paced by its cost; here the changed
                // groups' member lists are only shared.
                self.writer.submit(lists);
            }
            Outcome::Waiting(waiting) => {
                if self.waiting.as_ref() != Some(&waiting) {
                    if waiting.unknown.is_empty() {
                        tracing::info!("not writing {} yet: {waiting}", self.path.display());
                    } else {
                        tracing::warn!("not writing {}: {waiting}", self.path.display());
                    }
                    self.waiting = Some(waiting);
                }
            }
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<(), BoxError> {
        Ok(self.writer.stop()?)
    }
}

/// Checks the mappings and lines and builds the file's layout.
/// Every check of a spec that touches nothing: its resolved path and layout.
fn checked(spec: &HostsFileSpec) -> Result<(PathBuf, Layout), BoxError> {
    if spec.interval.get().is_zero() {
        return Err("spec.interval: must be greater than 0".into());
    }
    if spec.filename.as_os_str().is_empty() {
        return Err("spec.filename: must not be empty".into());
    }
    let layout =
        layout_from(spec.mappings.clone(), spec.prepend_lines.clone(), spec.append_lines.clone())?;
    let path = std::env::current_dir()
        .map_err(|e| format!("spec.filename: cannot resolve {}: {e}", spec.filename.display()))?
        .join(&spec.filename);
    // A directory cannot be renamed over; a link (even to a directory) is simply replaced.
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
        return Err(format!("spec.filename: {} is a directory", path.display()).into());
    }
    Ok((path, layout))
}

fn layout_from(
    mappings: Vec<MappingSpec>,
    prepend_lines: Vec<String>,
    append_lines: Vec<String>,
) -> Result<Layout, BoxError> {
    let mut checked = Vec::with_capacity(mappings.len());
    for (index, mapping) in mappings.into_iter().enumerate() {
        let hostname = mapping.hostname.trim();
        if hostname.is_empty() {
            return Err(format!("spec.mappings[{index}].hostname: must not be empty").into());
        }
        if hostname.contains(|c: char| c.is_whitespace() || c == '#') {
            return Err(format!(
                "spec.mappings[{index}].hostname: {hostname:?} cannot be a hosts file name \
                 (no spaces or '#')"
            )
            .into());
        }
        checked.push(Mapping {
            group: mapping.group,
            hostname: hostname.to_owned(),
            fallback_addresses: mapping
                .fallback_addresses
                .iter()
                .map(IpAddr::to_canonical)
                .collect(),
        });
    }
    // As in Go: a trailing line break in a configured line does not double the newline.
    let trim = |lines: Vec<String>| -> Vec<String> {
        lines.into_iter().map(|line| line.trim_end_matches(['\r', '\n']).to_owned()).collect()
    };
    Ok(Layout {
        prepend_lines: trim(prepend_lines),
        mappings: checked,
        append_lines: trim(append_lines),
    })
}

export_output!(HostsFile);

#[cfg(test)]
mod tests {
    use super::*;
    use rgap_plugin_api::decode_spec;

    #[test]
    fn spec_keys_are_the_go_ones_and_nothing_else() {
        let spec: HostsFileSpec = decode_spec(
            "interval: 5s\nfilename: hosts\nmappings:\n- group: 1000\n  hostname: worker\n  \
             fallback_addresses: [1.2.3.4, '::ffff:5.6.7.8']\nprepend_lines:\nappend_lines: ['# end']\n",
        )
        .unwrap();
        assert_eq!(spec.mappings[0].fallback_addresses.len(), 2);
        assert!(spec.prepend_lines.is_empty());
        let layout = layout_from(spec.mappings, spec.prepend_lines, spec.append_lines).unwrap();
        assert_eq!(layout.mappings[0].fallback_addresses[1].to_string(), "5.6.7.8");

        let error = decode_spec::<HostsFileSpec>(
            "interval: 5s\nfilename: hosts\nmappings:\n- group: 1\n  hostnme: x\n",
        )
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("spec.mappings[0].hostnme: unknown field `hostnme`"), "{error}");
    }

    #[test]
    fn hostnames_must_fit_a_hosts_file() {
        let mapping = |hostname: &str| MappingSpec {
            group: 1,
            hostname: hostname.into(),
            fallback_addresses: vec![],
        };
        let error = layout_from(vec![mapping("a b")], vec![], vec![]).unwrap_err().to_string();
        assert!(error.starts_with("spec.mappings[0].hostname:"), "{error}");
        assert!(layout_from(vec![mapping(" ")], vec![], vec![]).is_err());
        assert!(layout_from(vec![mapping("worker.example.com")], vec![], vec![]).is_ok());
    }

    #[test]
    fn mode_is_a_quoted_octal_string() {
        let mode = |yaml: &str| {
            decode_spec::<HostsFileSpec>(&format!("interval: 5s\nfilename: hosts\nmode: {yaml}\n"))
                .map(|spec| spec.mode)
                .map_err(|e| e.to_string())
        };
        assert_eq!(mode("\"0640\""), Ok(Some(FileMode(0o640))));
        assert_eq!(mode("'644'"), Ok(Some(FileMode(0o644))));
        assert_eq!(mode("\"0o600\""), Ok(Some(FileMode(0o600))));
        assert_eq!(mode("0640"), Ok(Some(FileMode(0o640))));
        let error = mode("640").unwrap_err();
        assert!(error.starts_with("spec.mode: 640 is read as a decimal number"), "{error}");
        assert!(mode("0o640").is_err());
        for bad in ["\"0680\"", "\"4755\"", "\"rw-r--r--\"", "\"64\"", "\"\""] {
            let error = mode(bad).unwrap_err();
            assert!(error.starts_with("spec.mode: "), "{bad}: {error}");
            assert!(error.contains("is not a file mode"), "{bad}: {error}");
        }
        let spec = decode_spec::<HostsFileSpec>("interval: 5s\nfilename: hosts\n").unwrap();
        assert_eq!(spec.mode, None);
    }
}
