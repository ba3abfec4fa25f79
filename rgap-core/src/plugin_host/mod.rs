//! The plugin host: discovery, loading and delivery to output plugins.

use std::io::Write;

/// Writes the `rgap plugins` listing to `out`.
pub fn write_listing(out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "no plugins yet")
}
