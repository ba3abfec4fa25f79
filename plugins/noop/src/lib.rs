//! `noop`: an output that does nothing. Useful to run a listener only for its logs and to
//! check that plugin loading works. Accepts any `spec`, or none.

use rgap_plugin_api::{export_output, BoxError, HostHandle, OutputPlugin};

/// Nothing to configure, and nothing is rejected: the Go rgap's `noop` ignored its spec.
type AnySpec = serde::de::IgnoredAny;

struct Noop;

impl OutputPlugin for Noop {
    const KIND: &'static str = "noop";
    const DESCRIPTION: &'static str = "Does nothing (accepts any spec)";
    // Events are answered without entering the plugin.
    const WANTS_EVENTS: bool = false;
    type Spec = AnySpec;

    fn create(_spec: AnySpec, _host: HostHandle) -> Result<Self, BoxError> {
        Ok(Noop)
    }
}

export_output!(Noop);
