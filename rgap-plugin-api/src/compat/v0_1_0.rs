//! The root types exactly as rgap-plugin-api 0.1.0 declared them: a root module of four
//! fields and a `Host` of four methods. `Output` and the data types have not changed since,
//! so they are shared with the current API.

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RArc, RResult, RStr};
use abi_stable::{declare_root_module_statics, package_version_strings, sabi_trait, StableAbi};

use crate::abi::OutputBox;
use crate::types::{HostStats, LogLevel, PluginError};

/// The 0.1.0 root module.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = OutputModule_Ref)))]
#[sabi(missing_field(panic))]
pub struct OutputModule {
    /// The plugin's kind.
    pub kind: RStr<'static>,
    /// The plugin's own version.
    pub version: RStr<'static>,
    /// One line for `rgap plugins`.
    pub description: RStr<'static>,
    /// Makes an instance from the YAML text of its `spec`.
    #[sabi(last_prefix_field)]
    pub create:
        extern "C" fn(spec_yaml: RStr<'_>, host: HostBox) -> RResult<OutputBox, PluginError>,
}

impl RootModule for OutputModule_Ref {
    declare_root_module_statics! {OutputModule_Ref}
    const BASE_NAME: &'static str = "rgap_output";
    const NAME: &'static str = "rgap output plugin (API 0.1.0)";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The 0.1.0 host: logging and stats.
#[sabi_trait]
pub trait Host: Send + Sync + Clone {
    /// Writes one line to the listener's log, attributed to this output instance.
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>);

    /// The most verbose level the host will print.
    fn max_level(&self) -> LogLevel;

    /// The name of this output instance in logs.
    fn instance_name(&self) -> RStr<'_>;

    /// Listener counters at this moment.
    #[sabi(last_prefix_field)]
    fn stats(&self) -> HostStats;
}

/// A 0.1.0 host handle.
pub type HostBox = Host_TO<'static, RArc<()>>;
