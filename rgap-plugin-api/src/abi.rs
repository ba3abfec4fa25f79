//! The FFI-safe interface itself: the root module each plugin exports, the `Output` object a
//! plugin instance is, and the `Host` object the listener hands to it.
//!
//! Host and plugins are compiled separately, perhaps by different compilers, so everything
//! here goes through `abi_stable`, which checks the layout of every type when a plugin is
//! loaded and refuses a mismatch with an error instead of undefined behaviour.

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RArc, RBox, RResult, RSlice, RStr, RString, RVec, Tuple2};
use abi_stable::{declare_root_module_statics, package_version_strings, sabi_trait, StableAbi};

use crate::metrics::{MetricDesc, MetricFamilyBox};
use crate::types::{Event, GroupSnapshot, HostStats, LogLevel, Member, PluginError};

/// What every plugin file exports: who it is and how to make an instance.
///
/// `create` was the last field of 0.1.0. Fields may only be appended after it, and each
/// appended one is optional: a plugin built against an older 0.1.x lacks it, and the host
/// reads it as `None` (see the compatibility promise in the crate documentation).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = OutputModule_Ref)))]
#[sabi(missing_field(panic))]
pub struct OutputModule {
    /// The `kind` operators write in YAML; the file must be `librgap_output_<kind>.so`.
    pub kind: RStr<'static>,
    /// The plugin's own version (its crate version).
    pub version: RStr<'static>,
    /// One line for `rgap plugins`.
    pub description: RStr<'static>,
    /// Makes an instance from the YAML text of its `spec` (empty for no spec).
    #[sabi(last_prefix_field)]
    pub create:
        extern "C" fn(spec_yaml: RStr<'_>, host: HostBox) -> RResult<OutputBox, PluginError>,
    /// Since 0.1.1. Checks a spec as `create` would, with no side effect: binds nothing,
    /// writes nothing, starts no thread. `rgap validate` and reloads use it.
    #[sabi(missing_field(option))]
    pub validate: extern "C" fn(spec_yaml: RStr<'_>, host: HostBox) -> RResult<(), PluginError>,
    /// Since 0.1.1. Whether the plugin uses per-member events; when false the host makes no
    /// `on_event` call at all (snapshots carry everything). Absent means true.
    #[sabi(missing_field(option))]
    pub wants_events: bool,
}

impl RootModule for OutputModule_Ref {
    declare_root_module_statics! {OutputModule_Ref}
    const BASE_NAME: &'static str = "rgap_output";
    const NAME: &'static str = "rgap output plugin";
    // Expanded here, so this is the version of rgap-plugin-api the plugin was built against:
    // the loader refuses a plugin whose API version is incompatible with the host's.
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// One running output. The host calls it from one delivery thread only, in order: the events
/// of a change, then a snapshot of every group.
#[sabi_trait]
pub trait Output: Send {
    /// A membership change (or `Resync` after this output fell behind).
    fn on_event(&mut self, event: &Event) -> RResult<(), PluginError>;

    /// The state of every group, borrowed for the duration of the call.
    fn on_snapshot(&mut self, groups: RSlice<'_, GroupSnapshot<'_>>) -> RResult<(), PluginError>;

    /// Shut down: finish what is running, release files and sockets. Called once, last.
    #[sabi(last_prefix_field)]
    fn stop(&mut self) -> RResult<(), PluginError>;
}

/// An output instance as the host holds it.
pub type OutputBox = Output_TO<'static, RBox<()>>;

/// The listener's side, handed to each plugin instance: logging and read-only stats.
///
/// A plugin cannot use the host's tracing subscriber (a cdylib has its own statics), so its
/// log lines come back through `log`. The host never panics in these methods.
#[sabi_trait]
pub trait Host: Send + Sync + Clone {
    /// Writes one line to the listener's log, attributed to this output instance.
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>);

    /// The most verbose level the host will print: cheaper levels need not be formatted.
    fn max_level(&self) -> LogLevel;

    /// The name of this output instance in logs, e.g. `hostsfile#2`.
    fn instance_name(&self) -> RStr<'_>;

    /// Listener counters at this moment.
    #[sabi(last_prefix_field)]
    fn stats(&self) -> HostStats;

    /// Since 0.1.1. The directory of the listener's config file, against which relative
    /// paths in a spec are resolved; empty if the host does not say (an older host).
    fn config_dir(&self) -> RStr<'_> {
        RStr::from_str("")
    }

    /// Since 0.1.1. Registers a metric family of this instance; an older host answers with
    /// an error, and the author kit then hands out values nobody reads.
    fn register_metric(&self, desc: MetricDesc<'_>) -> RResult<MetricFamilyBox, PluginError> {
        let _ = desc;
        RResult::RErr(PluginError::failed("this rgap does not take plugin metrics"))
    }

    /// Since 0.1.1. Facts about one member beyond its address and expiry, as `key`/`value`
    /// text pairs (empty when the host has none). This is the path for per-member data:
    /// new facts become new keys, never new fields in [`crate::Member`], so adding one
    /// never refuses a plugin already shipped.
    fn member_attributes(&self, group: u64, member: &Member) -> RVec<Tuple2<RString, RString>> {
        let _ = (group, member);
        RVec::new()
    }
}

/// A host handle as plugins receive it; cheap to clone and to send to other threads.
pub type HostBox = Host_TO<'static, RArc<()>>;
