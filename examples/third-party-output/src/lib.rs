//! `acme_audit`: an rgap output plugin written outside the rgap project, as a third party
//! would. It appends one JSON object per line to a file for every membership change, so an
//! auditor can tell which address served a group when:
//!
//! ```text
//! {"at_unix_us":1764166800000000,"event":"join","group":1000,"address":"10.0.0.1","expires_at_unix_us":1764166815000000}
//! {"at_unix_us":1764166815000000,"event":"leave","group":1000,"address":"10.0.0.1","expires_at_unix_us":1764166815000000}
//! ```
//!
//! If rgap had to drop events because this plugin fell behind, the next line is a
//! `"event":"resync"` record per group with its full member list, so the trail stays true.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use rgap_plugin_api::{
    export_output, BoxError, Counter, Event, GroupSnapshot, HostHandle, OutputPlugin,
};
use serde::{Deserialize, Serialize};

/// `spec:` of an `acme_audit` output.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditSpec {
    /// The audit file; created if missing, always appended to.
    path: PathBuf,
    /// Groups to audit; absent means every group.
    #[serde(default)]
    groups: Option<Vec<u64>>,
}

/// One line of the audit file.
#[derive(Serialize)]
struct Record<'a> {
    at_unix_us: i64,
    event: &'a str,
    group: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at_unix_us: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    members: Option<Vec<String>>,
}

struct Audit {
    path: PathBuf,
    groups: Option<Vec<u64>>,
    out: BufWriter<File>,
    /// Set by `Event::Resync`: the next snapshot is written out in full.
    resync_pending: bool,
    /// `rgap_plugin_acme_audit_lines_total` on rgap's `/metrics`.
    lines: Counter,
}

impl Audit {
    fn wants(&self, group: u64) -> bool {
        self.groups.as_ref().is_none_or(|groups| groups.contains(&group))
    }

    fn write(&mut self, record: &Record<'_>) -> Result<(), BoxError> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n").map_err(|error| self.io_error(error))?;
        self.lines.inc();
        Ok(())
    }

    fn io_error(&self, error: std::io::Error) -> BoxError {
        format!("writing {}: {error}", self.path.display()).into()
    }
}

fn now_unix_us() -> i64 {
    let since_epoch = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX)
}

impl OutputPlugin for Audit {
    const KIND: &'static str = "acme_audit";
    const DESCRIPTION: &'static str = "ACME audit trail: joins and leaves as JSON lines in a file";
    type Spec = AuditSpec;

    /// What `rgap validate` and reloads check: the file could be opened, without creating it.
    fn validate(spec: &AuditSpec, host: &HostHandle) -> Result<(), BoxError> {
        let path = host.resolve(&spec.path);
        if path.is_dir() {
            return Err(format!("spec.path: {} is a directory", path.display()).into());
        }
        let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty());
        if let Some(dir) = dir.filter(|dir| !dir.is_dir()) {
            return Err(format!("spec.path: no directory {}", dir.display()).into());
        }
        Ok(())
    }

    fn create(spec: AuditSpec, host: HostHandle) -> Result<Self, BoxError> {
        // Relative paths are relative to the listener's config file.
        let path = host.resolve(&spec.path);
        // Opened here, so that a wrong path stops rgap at start with this message.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|error| format!("spec.path: cannot open {}: {error}", path.display()))?;
        tracing::info!("auditing to {}", path.display());
        let lines = host.counter("lines_total", "Audit lines written", &[]).with_labels(&[]);
        Ok(Audit {
            path,
            groups: spec.groups,
            out: BufWriter::new(file),
            resync_pending: false,
            lines,
        })
    }

    fn on_event(&mut self, event: &Event) -> Result<(), BoxError> {
        let (name, group, member) = match *event {
            Event::Join { group, member } => ("join", group, member),
            Event::Leave { group, member } => ("leave", group, member),
            Event::Resync => {
                tracing::warn!("rgap dropped events for this output; writing full group lists");
                self.resync_pending = true;
                return Ok(());
            }
            // Readiness is rgap's business, not the auditor's.
            Event::Ready { .. } => return Ok(()),
        };
        if !self.wants(group) {
            return Ok(());
        }
        self.write(&Record {
            at_unix_us: now_unix_us(),
            event: name,
            group,
            address: Some(member.ip().to_string()),
            expires_at_unix_us: Some(member.expires_at_unix_us),
            members: None,
        })
    }

    /// Every batch of events is followed by a snapshot: a good moment to flush.
    fn on_snapshot(&mut self, groups: &[GroupSnapshot<'_>]) -> Result<(), BoxError> {
        if std::mem::take(&mut self.resync_pending) {
            let wanted: Vec<&GroupSnapshot<'_>> =
                groups.iter().filter(|group| self.wants(group.id)).collect();
            for group in wanted {
                let members = group.members().iter().map(|m| m.ip().to_string()).collect();
                self.write(&Record {
                    at_unix_us: now_unix_us(),
                    event: "resync",
                    group: group.id,
                    address: None,
                    expires_at_unix_us: None,
                    members: Some(members),
                })?;
            }
        }
        self.out.flush().map_err(|error| self.io_error(error))
    }

    fn stop(&mut self) -> Result<(), BoxError> {
        self.out.flush().map_err(|error| self.io_error(error))?;
        self.out.get_ref().sync_all().map_err(|error| self.io_error(error))
    }
}

export_output!(Audit);

/// The plugin driven through rgap-plugin-api's testkit: no listener, the same FFI glue.
#[cfg(test)]
mod tests {
    use rgap_plugin_api::testkit::{member, Harness, TestGroup};
    use rgap_plugin_api::Event;

    use super::Audit;

    fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    #[test]
    fn joins_and_leaves_of_audited_groups_become_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let spec = "path: audit.jsonl\ngroups: [1000]\n";
        let mut audit = Harness::builder().config_dir(dir.path()).create::<Audit>(spec).unwrap();
        let joined = member("10.0.0.1", 15);
        audit.event(Event::Join { group: 1000, member: joined }).unwrap();
        audit.event(Event::Join { group: 2000, member: member("10.9.9.9", 15) }).unwrap();
        audit.event(Event::Leave { group: 1000, member: joined }).unwrap();
        audit.snapshot(&[TestGroup::ready(1000)]).unwrap();
        audit.stop().unwrap();

        let records = lines(&dir.path().join("audit.jsonl"));
        assert_eq!(records.len(), 2, "group 2000 is not audited: {records:?}");
        assert_eq!(records[0]["event"], "join");
        assert_eq!(records[0]["address"], "10.0.0.1");
        assert_eq!(records[0]["expires_at_unix_us"], joined.expires_at_unix_us);
        assert_eq!(records[1]["event"], "leave");
        assert_eq!(audit.calls().events, 3);
        assert_eq!(audit.metric("lines_total", &[]), Some(2));
        assert!(audit.logged("auditing to"), "{:?}", audit.logs());
    }

    #[test]
    fn after_a_resync_the_next_snapshot_is_written_in_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut audit = Harness::new::<Audit>(&format!("path: {}\n", path.display())).unwrap();
        audit.event(Event::Resync).unwrap();
        let group = TestGroup::ready(1000).with_ip("10.0.0.2", 15).with_ip("fd00::1", 15);
        audit.snapshot(&[group]).unwrap();
        audit.stop().unwrap();
        let records = lines(&path);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["event"], "resync");
        assert_eq!(records[0]["members"], serde_json::json!(["10.0.0.2", "fd00::1"]));
        assert!(audit.logged("writing full group lists"));
    }

    #[test]
    fn validate_checks_the_directory_without_creating_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere/audit.jsonl");
        let error = Harness::validate::<Audit>(&format!("path: {}\n", missing.display()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("spec.path: no directory"), "{error}");
        let fine = dir.path().join("audit.jsonl");
        Harness::validate::<Audit>(&format!("path: {}\n", fine.display())).unwrap();
        assert!(!fine.exists(), "validate must not create the file");
        let error = Harness::validate::<Audit>("path: /tmp\nbogus: 1\n").unwrap_err().to_string();
        assert!(error.contains("spec.bogus: unknown field"), "{error}");
    }
}
