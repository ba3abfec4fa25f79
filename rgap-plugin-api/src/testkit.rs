//! A harness for plugin authors (feature `testkit`): make an instance of a plugin from spec
//! YAML, feed it events and snapshots, stop it, and look at what it did (its log lines, its
//! metrics, the calls that crossed the boundary) without running a listener.
//!
//! The instance is made and called through the same FFI entry points the listener uses
//! (`export_output!`'s glue, the panic boundary, the spec decoding), and delivery follows the
//! listener's rules: a plugin whose `WANTS_EVENTS` is false gets no `on_event` call at all.
//!
//! ```
//! use rgap_plugin_api::testkit::{Harness, TestGroup};
//! # use rgap_plugin_api::{BoxError, HostHandle, OutputPlugin};
//! # struct Quiet;
//! # impl OutputPlugin for Quiet {
//! #     const KIND: &'static str = "quiet";
//! #     const DESCRIPTION: &'static str = "logs the size of every group";
//! #     type Spec = serde::de::IgnoredAny;
//! #     fn create(_: serde::de::IgnoredAny, _: HostHandle) -> Result<Self, BoxError> { Ok(Quiet) }
//! #     fn on_snapshot(&mut self, groups: &[rgap_plugin_api::GroupSnapshot<'_>]) -> Result<(), BoxError> {
//! #         for group in groups { tracing::info!("group {} has {}", group.id, group.members().len()); }
//! #         Ok(())
//! #     }
//! # }
//! let mut harness = Harness::new::<Quiet>("").unwrap();
//! harness.snapshot(&[TestGroup::ready(1000).with_ip("10.0.0.1", 15)]).unwrap();
//! harness.stop().unwrap();
//! assert!(harness.logged("group 1000 has 1"));
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, RResult, RStr, RString, RVec};

use crate::abi::{Host, HostBox, Host_TO, OutputBox};
use crate::author::{create_entry, validate_entry, OutputPlugin};
use crate::metrics::{MetricDesc, MetricFamilyBox, MetricKind, MetricRegistry};
use crate::types::{Event, GroupSnapshot, HostStats, LogLevel, Member, MemberList, PluginError};

/// One group as a test describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestGroup {
    /// The group id.
    pub id: u64,
    /// Past its readiness delay.
    pub ready: bool,
    /// Its live members.
    pub members: Vec<Member>,
}

impl TestGroup {
    /// A ready group with no members.
    pub fn ready(id: u64) -> Self {
        TestGroup { id, ready: true, members: Vec::new() }
    }

    /// A group not yet ready.
    pub fn not_ready(id: u64) -> Self {
        TestGroup { id, ready: false, members: Vec::new() }
    }

    /// Adds a member at `ip` (IPv4 or IPv6 text) expiring `expires_in_secs` from now.
    pub fn with_ip(mut self, ip: &str, expires_in_secs: i64) -> Self {
        self.members.push(member(ip, expires_in_secs));
        self
    }
}

/// A member at `ip` (IPv4 or IPv6 text; panics on anything else, as a test should) that
/// expires `expires_in_secs` from now.
pub fn member(ip: &str, expires_in_secs: i64) -> Member {
    let address = match ip.parse::<IpAddr>().expect("an IP address") {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let now_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    Member { address: address.octets(), expires_at_unix_us: now_us + expires_in_secs * 1_000_000 }
}

/// Calls the harness made into the plugin, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls {
    /// `on_event` calls that crossed the boundary.
    pub events: u64,
    /// `on_snapshot` calls.
    pub snapshots: u64,
}

/// A plugin instance under test.
pub struct Harness {
    output: Option<OutputBox>,
    host: Arc<TestHostState>,
    wants_events: bool,
    calls: Calls,
    revisions: HashMap<u64, (TestGroup, u64, u64)>,
    next_revision: u64,
}

impl Harness {
    /// Makes an instance of `P` from `spec_yaml` (empty for no spec) as the listener would.
    pub fn new<P: OutputPlugin>(spec_yaml: &str) -> Result<Harness, PluginError> {
        Harness::builder().create::<P>(spec_yaml)
    }

    /// Chooses the instance name or config directory before making the instance.
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder { instance: "test#0".to_owned(), config_dir: None }
    }

    /// Checks `spec_yaml` through the plugin's `validate` entry point.
    pub fn validate<P: OutputPlugin>(spec_yaml: &str) -> Result<(), PluginError> {
        Harness::builder().validate::<P>(spec_yaml)
    }

    /// Delivers one event (not at all, as in the listener, if the plugin does not want them).
    pub fn event(&mut self, event: Event) -> Result<(), PluginError> {
        if !self.wants_events {
            return Ok(());
        }
        self.calls.events += 1;
        self.instance()?.on_event(&event).into_result()
    }

    /// Delivers a snapshot of `groups`. Revisions move as the listener's do: `revision` when a
    /// group's members, expiries or readiness change, `membership_revision` when its set of
    /// addresses changes.
    pub fn snapshot(&mut self, groups: &[TestGroup]) -> Result<(), PluginError> {
        let lists: Vec<MemberList> =
            groups.iter().map(|group| RArc::new(RVec::from(group.members.clone()))).collect();
        let mut snapshots = Vec::with_capacity(groups.len());
        for (group, members) in groups.iter().zip(&lists) {
            let (revision, membership_revision) = self.revisions_for(group);
            snapshots.push(GroupSnapshot {
                id: group.id,
                ready: group.ready,
                revision,
                membership_revision,
                members,
            });
        }
        self.calls.snapshots += 1;
        self.instance()?.on_snapshot(snapshots.as_slice().into()).into_result()
    }

    /// Stops the instance, as the listener does at shutdown.
    pub fn stop(&mut self) -> Result<(), PluginError> {
        let result = self.instance()?.stop().into_result();
        self.output = None;
        result
    }

    /// The calls that crossed the boundary so far.
    pub fn calls(&self) -> Calls {
        self.calls
    }

    /// Every log line so far (the plugin's own threads included), with its level.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.host.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether some log line contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.logs().iter().any(|(_, line)| line.contains(text))
    }

    /// The value of the plugin's metric `name` with these label values, if registered.
    pub fn metric(&self, name: &str, label_values: &[&str]) -> Option<i64> {
        self.host.metrics.sample().into_iter().find(|family| family.name == name).and_then(
            |family| {
                family.values.into_iter().find_map(|(labels, value)| {
                    (labels.iter().map(String::as_str).eq(label_values.iter().copied()))
                        .then_some(value)
                })
            },
        )
    }

    /// The kinds of metrics registered, by name.
    pub fn metric_kind(&self, name: &str) -> Option<MetricKind> {
        self.host.metrics.sample().into_iter().find(|f| f.name == name).map(|f| f.kind)
    }

    fn instance(&mut self) -> Result<&mut OutputBox, PluginError> {
        self.output.as_mut().ok_or_else(|| PluginError::failed("the instance was stopped"))
    }

    fn revisions_for(&mut self, group: &TestGroup) -> (u64, u64) {
        let addresses = |g: &TestGroup| {
            let mut set: Vec<[u8; 16]> = g.members.iter().map(|m| m.address).collect();
            set.sort_unstable();
            set
        };
        let next = &mut self.next_revision;
        let entry = self.revisions.entry(group.id).or_insert_with(|| {
            *next += 1;
            (group.clone(), *next, *next)
        });
        if entry.0 != *group {
            *next += 1;
            if addresses(&entry.0) != addresses(group) {
                entry.2 = *next;
            }
            entry.1 = *next;
            entry.0 = group.clone();
        }
        (entry.1, entry.2)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(mut output) = self.output.take() {
            let _ = output.stop();
        }
    }
}

/// Settings of the host a [`Harness`] plays.
pub struct HarnessBuilder {
    instance: String,
    config_dir: Option<PathBuf>,
}

impl HarnessBuilder {
    /// The instance name in logs (default `test#0`).
    pub fn instance(mut self, name: &str) -> Self {
        self.instance = name.to_owned();
        self
    }

    /// The directory relative spec paths resolve against (default: none, as an old host).
    pub fn config_dir(mut self, dir: &Path) -> Self {
        self.config_dir = Some(dir.to_path_buf());
        self
    }

    /// Makes the instance.
    pub fn create<P: OutputPlugin>(self, spec_yaml: &str) -> Result<Harness, PluginError> {
        let (host, state) = self.host();
        let output = create_entry::<P>(RStr::from_str(spec_yaml), host).into_result()?;
        Ok(Harness {
            output: Some(output),
            host: state,
            wants_events: P::WANTS_EVENTS,
            calls: Calls::default(),
            revisions: HashMap::new(),
            next_revision: 0,
        })
    }

    /// Runs the plugin's `validate` entry point on `spec_yaml`.
    pub fn validate<P: OutputPlugin>(self, spec_yaml: &str) -> Result<(), PluginError> {
        let (host, _) = self.host();
        validate_entry::<P>(RStr::from_str(spec_yaml), host).into_result()
    }

    fn host(self) -> (HostBox, Arc<TestHostState>) {
        let state = Arc::new(TestHostState {
            instance: RString::from(self.instance),
            config_dir: RString::from(
                self.config_dir.map(|dir| dir.display().to_string()).unwrap_or_default(),
            ),
            logs: Mutex::default(),
            metrics: MetricRegistry::default(),
        });
        let host = Host_TO::from_ptr(RArc::new(TestHost(state.clone())), TD_Opaque);
        (host, state)
    }
}

struct TestHostState {
    instance: RString,
    config_dir: RString,
    logs: Mutex<Vec<(LogLevel, String)>>,
    metrics: MetricRegistry,
}

#[derive(Clone)]
struct TestHost(Arc<TestHostState>);

impl Host for TestHost {
    fn log(&self, level: LogLevel, _target: RStr<'_>, message: RStr<'_>) {
        let line = format!("{}: {}", self.0.instance, message.as_str());
        self.0.logs.lock().unwrap_or_else(|e| e.into_inner()).push((level, line));
    }

    fn max_level(&self) -> LogLevel {
        LogLevel::Debug
    }

    fn instance_name(&self) -> RStr<'_> {
        self.0.instance.as_rstr()
    }

    fn stats(&self) -> HostStats {
        HostStats::default()
    }

    fn config_dir(&self) -> RStr<'_> {
        self.0.config_dir.as_rstr()
    }

    fn register_metric(&self, desc: MetricDesc<'_>) -> RResult<MetricFamilyBox, PluginError> {
        self.0.metrics.register(&desc).into()
    }
}

/// IPv4 text for a member, for assertions.
pub fn ipv4(member: &Member) -> Option<Ipv4Addr> {
    Ipv6Addr::from(member.address).to_ipv4_mapped()
}
