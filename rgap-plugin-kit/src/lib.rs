//! Helpers shared by the listener and its built-in plugins that are **not** part of the
//! plugin contract. They live outside `rgap-plugin-api` on purpose: abi_stable checks the
//! version of the crate that defines the ABI types, so anything in that crate that changes
//! often would put every plugin already shipped at risk. A plugin links this crate
//! statically, like any other library; changing it never changes what a plugin is checked
//! against when it is loaded.

pub mod pacing;
pub mod process;
