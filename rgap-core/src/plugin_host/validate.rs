//! Checking outputs without starting them, for `rgap validate` and reloads: every kind is
//! found, trusted and loadable, and each spec passes its plugin's `validate` entry point,
//! which binds, writes and starts nothing. Errors read exactly as when the listener starts.

use std::path::PathBuf;
use std::sync::Arc;

use rgap_plugin_api::MetricRegistry;

use super::host_impl::{HostEnv, InstanceHost};
use super::{locate, OutputConfig, StartError};

/// How far one output's spec could be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecCheck {
    /// The plugin's `validate` accepted it.
    Checked,
    /// The plugin predates `validate` (built against rgap-plugin-api 0.1.0): found and
    /// loadable, spec not checked.
    NotChecked,
}

/// Checks every output in `configs`; stops at the first error, which names the output.
pub fn validate_outputs(
    configs: &[OutputConfig],
    dirs: &[PathBuf],
    env: &HostEnv,
) -> Result<Vec<(String, SpecCheck)>, StartError> {
    let mut checks = Vec::with_capacity(configs.len());
    for (index, config) in configs.iter().enumerate() {
        let (path, plugin) = locate(index, config, dirs)?;
        let name = format!("{}#{index}", config.kind);
        let host = InstanceHost::new(&name, env, Arc::new(MetricRegistry::default()));
        let check = match plugin.validate(&config.spec_yaml, &host) {
            None => SpecCheck::NotChecked,
            Some(Ok(())) => SpecCheck::Checked,
            Some(Err(error)) => {
                return Err(StartError::Create {
                    index,
                    kind: config.kind.clone(),
                    path,
                    message: error.to_string(),
                })
            }
        };
        checks.push((name, check));
    }
    Ok(checks)
}
