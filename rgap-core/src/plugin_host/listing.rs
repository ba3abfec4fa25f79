//! `rgap plugins`: every plugin file found in the search directories, with its kind,
//! version and description, or why it cannot be loaded. A kind found in an earlier
//! directory shadows the same kind further down the list, as it does when loading.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::PathBuf;

use rgap_plugin_api::API_VERSION;

use super::discovery::{kind_of_file, plugin_files_in};
use super::loader::load;

/// Writes the listing for the default search directories (no config) to `out`.
pub fn write_listing(out: &mut dyn Write) -> io::Result<()> {
    write_listing_for(out, &super::search_dirs(&[]))
}

/// Writes the listing for `dirs` (see [`super::search_dirs`]) to `out`.
pub fn write_listing_for(out: &mut dyn Write, dirs: &[PathBuf]) -> io::Result<()> {
    writeln!(out, "rgap {} (plugin API {API_VERSION})", env!("CARGO_PKG_VERSION"))?;
    let mut seen_kinds = HashSet::new();
    for dir in dirs {
        if !dir.is_dir() {
            writeln!(out, "{}: (no such directory)", dir.display())?;
            continue;
        }
        let files = plugin_files_in(dir);
        writeln!(out, "{}:{}", dir.display(), if files.is_empty() { " (no plugins)" } else { "" })?;
        for path in files {
            let file_kind = kind_of_file(&path).unwrap_or_default().to_owned();
            let shadowed = !seen_kinds.insert(file_kind.clone());
            match load(&path) {
                Ok(plugin) => {
                    let note = if shadowed { "  (shadowed by an earlier directory)" } else { "" };
                    writeln!(
                        out,
                        "  {:<12} {:<8} {}{note}",
                        plugin.kind(),
                        plugin.version(),
                        plugin.description()
                    )?;
                }
                Err(error) => writeln!(out, "  {file_kind:<12} BROKEN   {error}")?,
            }
        }
    }
    Ok(())
}
