//! Loads one plugin file and checks it is an rgap output plugin built against a compatible
//! `rgap-plugin-api`, turning `abi_stable`'s errors into one line an operator can act on.
//!
//! Each file is loaded on its own with `lib_header_from_path`: `RootModule::load_from_file`
//! caches one library per root-module type and would hand back the first plugin for every
//! file. Libraries stay loaded until exit (abi_stable never unloads them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use abi_stable::library::{lib_header_from_path, LibraryError};
use rgap_plugin_api::{OutputModule_Ref, API_VERSION};

use super::discovery::kind_of_file;

/// A loaded plugin file.
#[derive(Clone, Copy)]
pub struct LoadedPlugin {
    pub module: OutputModule_Ref,
}

impl LoadedPlugin {
    pub fn kind(&self) -> &'static str {
        self.module.kind().as_str()
    }

    pub fn version(&self) -> &'static str {
        self.module.version().as_str()
    }

    pub fn description(&self) -> &'static str {
        self.module.description().as_str()
    }
}

/// Why a file could not be used as a plugin. Each message is one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: not a loadable shared object: {reason}")]
    NotSharedObject { path: PathBuf, reason: String },
    #[error("{path}: a shared object, but not an rgap plugin (it exports no rgap root module)")]
    NotAPlugin { path: PathBuf },
    #[error("{path}: built against rgap-plugin-api {plugin_api}, this rgap needs {host_api}: rebuild the plugin")]
    IncompatibleApi { path: PathBuf, plugin_api: String, host_api: String },
    #[error("{path}: built with an incompatible abi_stable: rebuild the plugin against rgap-plugin-api {host_api}")]
    IncompatibleAbiStable { path: PathBuf, host_api: String },
    #[error("{path}: the file is named for kind \"{file_kind}\" but the plugin says it is \"{plugin_kind}\"")]
    KindMismatch { path: PathBuf, file_kind: String, plugin_kind: String },
    #[error("{path}: {message}")]
    Other { path: PathBuf, message: String },
}

/// Loads `path`, once per process: later calls return the same module.
pub fn load(path: &Path) -> Result<LoadedPlugin, LoadError> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, LoadedPlugin>>> = OnceLock::new();
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let loaded = LOADED.get_or_init(Default::default);
    if let Some(plugin) = loaded.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(*plugin);
    }
    let plugin = load_uncached(path)?;
    loaded.lock().unwrap_or_else(|e| e.into_inner()).insert(key, plugin);
    Ok(plugin)
}

fn load_uncached(path: &Path) -> Result<LoadedPlugin, LoadError> {
    let header = lib_header_from_path(path).map_err(|error| explain(path, error, None))?;
    let plugin_api = header.version_strings().version.to_string();
    let module = header
        .init_root_module::<OutputModule_Ref>()
        .map_err(|error| explain(path, error, Some(&plugin_api)))?;
    let plugin = LoadedPlugin { module };
    if let Some(file_kind) = kind_of_file(path) {
        if file_kind != plugin.kind() {
            return Err(LoadError::KindMismatch {
                path: path.to_path_buf(),
                file_kind: file_kind.to_owned(),
                plugin_kind: plugin.kind().to_owned(),
            });
        }
    }
    Ok(plugin)
}

/// One line for the operator; abi_stable's full layout report only at debug level.
fn explain(path: &Path, error: LibraryError, plugin_api: Option<&str>) -> LoadError {
    let path = path.to_path_buf();
    let host_api = API_VERSION.to_owned();
    match error {
        LibraryError::OpenError { err, .. } => {
            // dlerror() starts with the path, which our message already names.
            let reason = first_line(&err.to_string());
            let reason = reason
                .strip_prefix(&format!("{}: ", path.display()))
                .map(str::to_owned)
                .unwrap_or(reason);
            LoadError::NotSharedObject { path, reason }
        }
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin { path },
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => {
            LoadError::IncompatibleApi { path, plugin_api: actual_version.to_string(), host_api }
        }
        LibraryError::AbiInstability(report) => {
            if tracing::enabled!(tracing::Level::DEBUG) {
                // The report runs to thousands of lines; its `Error:` lines say what differs.
                let report = report.to_string();
                let mut first_errors: Vec<&str> = report
                    .lines()
                    .map(str::trim)
                    .filter(|line| line.starts_with("Error:"))
                    .collect();
                first_errors.dedup();
                first_errors.truncate(5);
                tracing::debug!(
                    file = %path.display(),
                    "abi_stable layout mismatch: {}",
                    first_errors.join(" | ")
                );
            }
            let plugin_api = match plugin_api {
                Some(version) if version == API_VERSION => {
                    format!("{version} with other type layouts")
                }
                Some(version) => version.to_owned(),
                None => "an unknown version".to_owned(),
            };
            LoadError::IncompatibleApi { path, plugin_api, host_api }
        }
        LibraryError::InvalidAbiHeader(_) | LibraryError::InvalidCAbi { .. } => {
            LoadError::IncompatibleAbiStable { path, host_api }
        }
        LibraryError::ParseVersionError(error) => {
            LoadError::Other { path, message: format!("unreadable plugin API version: {error}") }
        }
        other => LoadError::Other { path, message: first_line(&other.to_string()) },
    }
}

fn first_line(text: &str) -> String {
    text.lines().find(|line| !line.trim().is_empty()).unwrap_or(text).trim().to_owned()
}
