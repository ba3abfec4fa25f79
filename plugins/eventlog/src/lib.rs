//! `eventlog`: writes each membership change to the listener's log, as the Go rgap did:
//! `host <ip> has joined group <id>` and `host <ip> has left group <id>`, for the groups in
//! `only_groups` (all groups when absent or null).

use rgap_plugin_api::{export_output, BoxError, Event, HostHandle, OutputPlugin};
use serde::Deserialize;

/// `spec:` of an `eventlog` output.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLogSpec {
    /// Groups to log; `None` means every group.
    #[serde(default)]
    only_groups: Option<Vec<u64>>,
}

struct EventLog {
    only_groups: Option<Vec<u64>>,
}

impl EventLog {
    fn wants(&self, group: u64) -> bool {
        self.only_groups.as_ref().is_none_or(|groups| groups.contains(&group))
    }
}

impl OutputPlugin for EventLog {
    const KIND: &'static str = "eventlog";
    const DESCRIPTION: &'static str = "Logs every join and leave of the groups it follows";
    type Spec = EventLogSpec;

    fn create(spec: EventLogSpec, _host: HostHandle) -> Result<Self, BoxError> {
        Ok(EventLog { only_groups: spec.only_groups })
    }

    fn on_event(&mut self, event: &Event) -> Result<(), BoxError> {
        match *event {
            // `ip()` shows IPv4 dotted and IPv6 compressed.
            Event::Join { group, member } if self.wants(group) => {
                tracing::info!("host {} has joined group {group}", member.ip());
            }
            Event::Leave { group, member } if self.wants(group) => {
                tracing::info!("host {} has left group {group}", member.ip());
            }
            Event::Resync => {
                tracing::warn!("fell behind: some joins and leaves were not logged");
            }
            _ => {}
        }
        Ok(())
    }
}

export_output!(EventLog);
