//! rgap-core: everything the `rgap` binary does, as a library that tests can drive
//! without a process. The binary (`src/main.rs`) only maps CLI arguments onto these modules.
//!
//! Layers, each knowing only the one below it: `protocol` knows bytes, `listener` knows
//! sockets and time, `plugin_host` knows shared objects.

pub mod addrspec;
pub mod agent;
pub mod config;
pub mod duration;
pub mod listener;
pub mod logging;
pub mod observe;
pub mod plugin_host;
pub mod protocol;
pub mod psk;
pub(crate) mod systemd;
pub mod validate;
