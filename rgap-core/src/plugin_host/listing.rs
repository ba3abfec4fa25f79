//! `rgap plugins`: every plugin file found in the search directories, with its kind,
//! version and description, or why it cannot be loaded. A kind found in an earlier
//! directory shadows the same kind further down the list, as it does when loading.

use std::collections::HashMap;
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
    let mut seen_kinds: HashMap<String, PathBuf> = HashMap::new();
    for dir in dirs {
        if !dir.is_dir() {
            writeln!(out, "{}: (no such directory)", dir.display())?;
            continue;
        }
        let files = plugin_files_in(dir);
        writeln!(out, "{}:{}", dir.display(), if files.is_empty() { " (no plugins)" } else { "" })?;
        for path in files {
            let file_kind = kind_of_file(&path).unwrap_or_default().to_owned();
            // A shadowed file is never loaded (as when the listener starts): its code does
            // not run just because someone listed the plugins.
            if let Some(first) = seen_kinds.get(&file_kind) {
                writeln!(out, "  {file_kind:<12} shadowed by {} (not loaded)", first.display())?;
                continue;
            }
            seen_kinds.insert(file_kind.clone(), path.clone());
            match load(&path) {
                Ok(plugin) => {
                    let entry_points = plugin.optional_entry_points();
                    let entry_points = if entry_points.is_empty() {
                        "none".to_owned()
                    } else {
                        entry_points.join(", ")
                    };
                    writeln!(
                        out,
                        "  {:<12} {:<8} {} [optional entry points: {entry_points}]",
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
