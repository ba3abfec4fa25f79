//! The FFI-safe interface itself: the root module each plugin exports, the `Output` object a
//! plugin instance is, and the `Host` object the listener hands to it.
//!
//! Host and plugins are compiled separately, perhaps by different compilers, so everything
//! here goes through `abi_stable`, which checks the layout of every type when a plugin is
//! loaded and refuses a mismatch with an error instead of undefined behaviour.

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RArc, RBox, RResult, RSlice, RStr};
use abi_stable::{declare_root_module_statics, package_version_strings, sabi_trait, StableAbi};

use crate::types::{Event, GroupSnapshot, HostStats, LogLevel, PluginError};

/// What every plugin file exports: who it is and how to make an instance.
///
/// Fields may only be appended after `create` (as new, optional prefix fields), so that an
/// older host can still load a newer plugin.
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
}

/// A host handle as plugins receive it; cheap to clone and to send to other threads.
pub type HostBox = Host_TO<'static, RArc<()>>;
