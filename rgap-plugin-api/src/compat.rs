//! Frozen copies of the root types of every earlier 0.1 release, so that this host can
//! still load plugins built against them.
//!
//! abi_stable checks a plugin's root module against the host's (the *interface*), and for
//! prefix types (the root module, `sabi_trait` vtables) it accepts a plugin with **more**
//! fields than the host knows, but refuses one with **fewer** ("too many fields"): an older
//! host loads a newer plugin, never the other way round (abi_stable issue #118). Appending
//! an entry point to the root module or a method to `Host` would therefore refuse every
//! plugin already shipped. So the host checks a plugin against the current types first and,
//! if that fails, against each frozen copy here: the same names, package and fields as that
//! release, which is all abi_stable compares.
//!
//! Rules: a copy is added whenever a release appends to `OutputModule` or `Host`, and never
//! changed afterwards. `testdata/frozen-plugins/` holds a plugin binary of each, loaded by a
//! test.

pub mod v0_1_0;
