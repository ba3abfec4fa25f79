//! `rgap validate`: everything `rgap listener` checks before it binds a socket or touches a
//! file (the YAML and its keys, group rules, every output kind found, trusted and loadable,
//! each spec accepted by its plugin's `validate`), with the listener's own error messages.
//! It binds nothing and writes nothing, so it can run beside a listener holding the ports.

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::listener::ListenerError;
use crate::plugin_host::{self, HostEnv, SpecCheck};

/// What a valid config holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub groups: usize,
    pub outputs: usize,
    /// Outputs whose plugin predates `validate`: found and loadable, spec not checked.
    pub unchecked: Vec<String>,
}

/// Checks the config at `config_path` as the listener would at start.
pub fn validate_config(config_path: &Path) -> Result<Validated, ListenerError> {
    let config = Config::load(config_path).map_err(ListenerError::Config)?;
    let dirs = plugin_host::search_dirs(&config.plugin_dirs);
    let env = HostEnv::new(config_path, Arc::new(Default::default));
    let checks =
        plugin_host::validate_outputs(&config.output_configs(), &dirs, &env).map_err(|error| {
            ListenerError::Outputs { file: config_path.to_path_buf(), error: Box::new(error) }
        })?;
    let unchecked = checks
        .into_iter()
        .filter(|(_, check)| *check == SpecCheck::NotChecked)
        .map(|(name, _)| name)
        .collect();
    Ok(Validated { groups: config.groups.len(), outputs: config.outputs.len(), unchecked })
}
