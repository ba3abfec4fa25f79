//! Go-style durations. The implementation lives in `rgap-plugin-api`, so that plugins decode
//! their `spec` durations exactly as the listener decodes its config.

pub use rgap_plugin_api::duration::*;
