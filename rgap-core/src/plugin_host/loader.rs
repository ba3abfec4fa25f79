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
use abi_stable::std_types::RStr;
use rgap_plugin_api::compat::v0_1_0;
use rgap_plugin_api::{OutputBox, OutputModule_Ref, PluginError, API_VERSION};

use super::host_impl::InstanceHost;

use super::discovery::kind_of_file;
use super::trust::{check_plugin_file, Untrusted};

/// A loaded plugin file, with the root module of the API release it was built against.
#[derive(Clone, Copy)]
pub struct LoadedPlugin {
    module: Module,
}

#[derive(Clone, Copy)]
enum Module {
    /// Built against this API release (or a later 0.1.x).
    Current(OutputModule_Ref),
    /// Built against rgap-plugin-api 0.1.0: no optional entry points.
    V0_1_0(v0_1_0::OutputModule_Ref),
}

impl LoadedPlugin {
    pub fn kind(&self) -> &'static str {
        match self.module {
            Module::Current(module) => module.kind().as_str(),
            Module::V0_1_0(module) => module.kind().as_str(),
        }
    }

    pub fn version(&self) -> &'static str {
        match self.module {
            Module::Current(module) => module.version().as_str(),
            Module::V0_1_0(module) => module.version().as_str(),
        }
    }

    pub fn description(&self) -> &'static str {
        match self.module {
            Module::Current(module) => module.description().as_str(),
            Module::V0_1_0(module) => module.description().as_str(),
        }
    }

    /// The API release the plugin was built against, as far as its layout tells.
    pub fn api_line(&self) -> &'static str {
        match self.module {
            Module::Current(_) => "0.1.1+",
            Module::V0_1_0(_) => "0.1.0",
        }
    }

    /// Whether instances get per-member events (plugins built before 0.1.1 always do).
    pub fn wants_events(&self) -> bool {
        match self.module {
            Module::Current(module) => module.wants_events().unwrap_or(true),
            Module::V0_1_0(_) => true,
        }
    }

    /// The optional entry points this plugin provides, by name, for `rgap plugins`.
    pub fn optional_entry_points(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if let Module::Current(module) = self.module {
            if module.validate().is_some() {
                names.push("validate");
            }
            if module.wants_events().is_some() {
                names.push("wants_events");
            }
        }
        names
    }

    /// Makes an instance from `spec_yaml`, handing it `host` in the shape it was built for.
    pub fn create(&self, spec_yaml: &str, host: &InstanceHost) -> Result<OutputBox, PluginError> {
        let spec = RStr::from_str(spec_yaml);
        match self.module {
            Module::Current(module) => (module.create())(spec, host.current()).into_result(),
            Module::V0_1_0(module) => (module.create())(spec, host.v0_1_0()).into_result(),
        }
    }

    /// Checks `spec_yaml` with the plugin's `validate` entry point; `None` if it has none.
    pub fn validate(
        &self,
        spec_yaml: &str,
        host: &InstanceHost,
    ) -> Option<Result<(), PluginError>> {
        let Module::Current(module) = self.module else {
            return None;
        };
        let validate = module.validate()?;
        Some(validate(RStr::from_str(spec_yaml), host.current()).into_result())
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
    #[error("{0}")]
    Untrusted(Box<Untrusted>),
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
    // Before anything of the file runs: loading executes its initialisers.
    check_plugin_file(path).map_err(|untrusted| LoadError::Untrusted(Box::new(untrusted)))?;
    let header = lib_header_from_path(path).map_err(|error| explain(path, error, None))?;
    let plugin_api = header.version_strings().version.to_string();
    let module = match header.init_root_module::<OutputModule_Ref>() {
        Ok(module) => Module::Current(module),
        // A plugin built against an earlier 0.1 release has fewer prefix fields than this
        // host's root module, which abi_stable refuses: try the layout of that release.
        Err(current_error @ LibraryError::AbiInstability(_)) => {
            match header.init_root_module::<v0_1_0::OutputModule_Ref>() {
                Ok(module) => Module::V0_1_0(module),
                Err(_) => return Err(explain(path, current_error, Some(&plugin_api))),
            }
        }
        Err(error) => return Err(explain(path, error, Some(&plugin_api))),
    };
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
    let host_api = compatible_api_versions();
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
                Some(version) if same_api_line(version) => {
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

/// The API versions this host loads plugins of, e.g. `0.1.x`: abi_stable treats `0.y` as
/// the major version, so any `0.1.z` plugin qualifies (appended fields are optional).
pub fn compatible_api_versions() -> String {
    let mut parts = API_VERSION.split('.');
    match (parts.next(), parts.next()) {
        (Some("0"), Some(minor)) => format!("0.{minor}.x"),
        (Some(major), _) => format!("{major}.x"),
        _ => API_VERSION.to_owned(),
    }
}

/// Whether `version` is of the same API line as this host (`0.1.z` for a 0.1 host).
fn same_api_line(version: &str) -> bool {
    let line = |v: &str| {
        let mut parts = v.split('.');
        match (parts.next(), parts.next()) {
            (Some("0"), Some(minor)) => format!("0.{minor}"),
            (major, _) => major.unwrap_or_default().to_owned(),
        }
    };
    line(version) == line(API_VERSION)
}

fn first_line(text: &str) -> String {
    text.lines().find(|line| !line.trim().is_empty()).unwrap_or(text).trim().to_owned()
}
