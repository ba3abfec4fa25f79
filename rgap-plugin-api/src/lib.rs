//! The stable ABI between rgap and its output plugins: the only crate a plugin depends on
//! (with `abi_stable`, whose macros expand to `::abi_stable::` paths).
//!
//! An output plugin is a `cdylib` named `librgap_output_<kind>.so`. The listener loads it at
//! run time, checks that it was built against a compatible version of this crate (its
//! version, [`API_VERSION`], is the plugin contract), and feeds each instance the membership
//! changes of the groups it knows: [`Event`]s, then a [`GroupSnapshot`] of every group.
//!
//! # Writing a plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "rgap-output-hello"
//! version = "0.1.0"
//! edition = "2021"
//!
//! [lib]
//! name = "rgap_output_hello"     # gives librgap_output_hello.so
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! rgap-plugin-api = "0.1"
//! abi_stable = "0.11"
//! serde = { version = "1", features = ["derive"] }
//! tracing = "0.1"
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use rgap_plugin_api::{export_output, BoxError, Event, HostHandle, OutputPlugin};
//!
//! /// `spec:` in YAML. Unknown keys are errors; absent or null `spec` decodes as `{}`.
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct HelloSpec {
//!     #[serde(default = "default_greeting")]
//!     greeting: String,
//! }
//!
//! fn default_greeting() -> String {
//!     "hello".to_owned()
//! }
//!
//! struct Hello {
//!     greeting: String,
//! }
//!
//! impl OutputPlugin for Hello {
//!     const KIND: &'static str = "hello";
//!     const DESCRIPTION: &'static str = "Greets every member that joins";
//!     type Spec = HelloSpec;
//!
//!     fn create(spec: HelloSpec, _host: HostHandle) -> Result<Self, BoxError> {
//!         Ok(Hello { greeting: spec.greeting })
//!     }
//!
//!     fn on_event(&mut self, event: &Event) -> Result<(), BoxError> {
//!         if let Event::Join { group, member } = event {
//!             // Plugin logs reach rgap's log through the host.
//!             tracing::info!("{} {} in group {group}", self.greeting, member.ip());
//!         }
//!         Ok(())
//!     }
//! }
//!
//! export_output!(Hello);
//! ```
//!
//! Build it with `cargo build --release`, copy `target/release/librgap_output_hello.so` into
//! a directory named in `RGAP_PLUGIN_PATH` or the config's `plugin_dirs` (or into
//! `/usr/lib/rgap/plugins`), and use `kind: hello` in the listener's `outputs`.
//!
//! # Compatibility promise
//!
//! A plugin built against any 0.1.z of this crate loads and works in every rgap of the 0.1
//! line. The crate only grows by appended, optional entry points (fields after the last of
//! [`OutputModule`], methods after the last of [`Host`]), each read as optional; the data
//! types ([`Member`], [`GroupSnapshot`], [`Event`]) never change. abi_stable accepts a plugin
//! with more appended fields than the host knows but refuses one with fewer, so the host
//! also checks a plugin against the frozen root types of each earlier release ([`compat`]).
//! The full guide, with the threading contract and shipping advice, is `docs/plugin-guide.md`
//! in the rgap repository.
//!
//! # Testing
//!
//! With the `testkit` feature (a dev-dependency), `testkit::Harness` makes an instance from
//! spec YAML through the same FFI glue rgap uses, feeds it events and snapshots, and shows its
//! log lines, metrics and the calls that crossed the boundary.
//!
//! # Rules the glue enforces
//!
//! * A panic in any method (or in `Drop`) is caught at the boundary and reported to the host
//!   as a [`PluginError`] of kind [`ErrorKind::Panicked`]; the host then drops the instance
//!   and re-creates it from its spec after a backoff.
//! * `tracing` events in host calls go to the listener's log, attributed to the instance.
//!   Threads the plugin spawns should run inside [`HostHandle::in_scope`].
//! * Calls come from one host thread at a time, in order. Return promptly: a plugin that
//!   falls behind gets [`Event::Resync`] and a fresh snapshot instead of the missed events.

#![warn(missing_docs)]
// `#[sabi_trait]` and the generated `*_Ref` names trip these lints on current rustc.
#![allow(non_local_definitions, non_camel_case_types)]

mod abi;
mod author;
pub mod compat;
pub mod duration;
mod log_bridge;
mod metrics;
#[cfg(feature = "testkit")]
pub mod testkit;
mod types;

pub use abi::{
    Host, HostBox, Host_TO, Output, OutputBox, OutputModule, OutputModule_Ref, Output_TO,
};
pub use author::{decode_spec, BoxError, HostHandle, OutputPlugin};
pub use author::{CounterFamily, GaugeFamily};
pub use metrics::{
    is_valid_metric_name, Counter, FamilySample, Gauge, MetricDesc, MetricFamily, MetricFamilyBox,
    MetricFamily_TO, MetricKind, MetricRegistry, MetricValue, MAX_LABEL_SETS_PER_FAMILY,
};
pub use types::{
    ErrorKind, Event, GroupSnapshot, HostStats, LogLevel, Member, MemberList, PluginError,
};

/// The version of this crate, which is the plugin contract: a plugin loads only into an
/// rgap whose API version is compatible with the one it was built against.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The file name of the plugin of `kind`: `librgap_output_<kind>.so`.
pub fn plugin_file_name(kind: &str) -> String {
    format!("librgap_output_{kind}.so")
}

#[doc(hidden)]
pub mod __private {
    pub use crate::author::{boundary_calls, create_entry, validate_entry, BoundaryCalls};
}

/// Exports an [`OutputPlugin`] implementation as this library's rgap root module.
///
/// Write it once, at the crate root of a `cdylib`: `export_output!(MyOutput);`.
#[macro_export]
macro_rules! export_output {
    ($plugin:ty) => {
        #[::abi_stable::export_root_module]
        pub fn rgap_output_root_module() -> $crate::OutputModule_Ref {
            extern "C" fn create(
                spec_yaml: ::abi_stable::std_types::RStr<'_>,
                host: $crate::HostBox,
            ) -> ::abi_stable::std_types::RResult<$crate::OutputBox, $crate::PluginError> {
                $crate::__private::create_entry::<$plugin>(spec_yaml, host)
            }
            extern "C" fn validate(
                spec_yaml: ::abi_stable::std_types::RStr<'_>,
                host: $crate::HostBox,
            ) -> ::abi_stable::std_types::RResult<(), $crate::PluginError> {
                $crate::__private::validate_entry::<$plugin>(spec_yaml, host)
            }
            use ::abi_stable::prefix_type::PrefixTypeTrait as _;
            $crate::OutputModule {
                kind: ::abi_stable::std_types::RStr::from_str(
                    <$plugin as $crate::OutputPlugin>::KIND,
                ),
                version: ::abi_stable::std_types::RStr::from_str(env!("CARGO_PKG_VERSION")),
                description: ::abi_stable::std_types::RStr::from_str(
                    <$plugin as $crate::OutputPlugin>::DESCRIPTION,
                ),
                create,
                validate,
                wants_events: <$plugin as $crate::OutputPlugin>::WANTS_EVENTS,
            }
            .leak_into_prefix()
        }
    };
}
