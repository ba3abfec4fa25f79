//! The listener's YAML config, compatible with the Go rgap's (`listen`, `groups`, `outputs`)
//! plus an optional `plugin_dirs`. Decoding is strict: an unknown key anywhere is an error,
//! and every error names the file, the key path (`groups[0].expire`) and, where serde_yaml
//! knows it, the line. Each output's `spec` is kept as YAML text for its plugin to decode.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::addrspec::AddrSpec;
use crate::duration::GoDuration;
use crate::plugin_host::{is_valid_kind, OutputConfig};
use crate::psk::Psk;

/// The whole listener config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to receive announcements: unicast or multicast `host:port[@iface|@CIDR]`.
    pub listen: Vec<AddrSpec>,
    /// The groups this listener keeps.
    pub groups: Vec<GroupConfig>,
    /// Output plugins, in order.
    #[serde(default)]
    pub outputs: Vec<OutputEntry>,
    /// Extra plugin directories (relative ones are relative to the config file's directory),
    /// searched after `RGAP_PLUGIN_PATH` and before the executable's directory.
    #[serde(default)]
    pub plugin_dirs: Vec<PathBuf>,
    /// The monitoring endpoint (`/metrics`, `/health`, `/ready`, `/v1/members`); without
    /// it nothing listens.
    #[serde(default)]
    pub http: Option<HttpConfig>,
}

/// `http:`: where the monitoring endpoint listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port` (an IP literal), e.g. `127.0.0.1:9253`.
    #[serde(deserialize_with = "http_listen_address")]
    pub listen: std::net::SocketAddr,
}

/// An IP `host:port`, refused with a message that quotes it and shows the form.
fn http_listen_address<'de, D>(deserializer: D) -> Result<std::net::SocketAddr, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid address {text:?}: use an IP address and a port, e.g. 127.0.0.1:9253 or [::1]:9253"
        ))
    })
}

/// One redundancy group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub id: u64,
    pub psk: Psk,
    /// How long an address stays past its announcement's timestamp.
    pub expire: GoDuration,
    /// Allowed difference between our clock and the announcement's; 0 or more than `expire`
    /// means `expire`.
    #[serde(default)]
    pub clock_skew: GoDuration,
    /// How long after start the group is reported ready to outputs.
    #[serde(default)]
    pub readiness_delay: GoDuration,
}

impl GroupConfig {
    /// The skew actually enforced, as the Go listener does it.
    pub fn effective_clock_skew(&self) -> Duration {
        let (skew, expire) = (self.clock_skew.get(), self.expire.get());
        if skew.is_zero() || skew > expire {
            expire
        } else {
            skew
        }
    }
}

/// One output: a plugin `kind` and its `spec`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputEntry {
    pub kind: String,
    #[serde(default)]
    pub spec: serde_yaml::Value,
}

/// A config that could not be used; `Display` is the whole one-line message.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    /// The key path, e.g. `groups[0].expire`; empty for the document as a whole.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, decodes and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            message: format!("cannot read config file: {error}"),
        })?;
        let mut config = Config::parse(&text).map_err(|(key, message)| ConfigError {
            file: path.to_path_buf(),
            key,
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for dir in &mut config.plugin_dirs {
            if dir.is_relative() {
                *dir = base.join(&*dir);
            }
        }
        Ok(config)
    }

    /// Decodes and validates YAML text; errors are `(key path, message)`.
    pub fn parse(text: &str) -> Result<Config, (String, String)> {
        let deserializer = serde_yaml::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let key = error.path().to_string();
            let key = if key == "." { String::new() } else { key };
            (key, error.into_inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if self.listen.is_empty() {
            return Err(("listen".into(), "at least one address is required".into()));
        }
        if self.groups.is_empty() {
            return Err(("groups".into(), "at least one group is required".into()));
        }
        let mut ids = HashSet::new();
        for (index, group) in self.groups.iter().enumerate() {
            if !ids.insert(group.id) {
                return Err((
                    format!("groups[{index}].id"),
                    format!("duplicate group id {}", group.id),
                ));
            }
            if group.expire.get().is_zero() {
                return Err((format!("groups[{index}].expire"), "must be greater than 0".into()));
            }
        }
        for (index, output) in self.outputs.iter().enumerate() {
            if !is_valid_kind(&output.kind) {
                return Err((
                    format!("outputs[{index}].kind"),
                    format!("invalid kind {:?}: use letters, digits, _ and -", output.kind),
                ));
            }
        }
        Ok(())
    }

    /// The outputs as the plugin host takes them, each spec as YAML text.
    pub fn output_configs(&self) -> Vec<OutputConfig> {
        self.outputs
            .iter()
            .map(|output| OutputConfig {
                kind: output.kind.clone(),
                spec_yaml: match &output.spec {
                    serde_yaml::Value::Null => String::new(),
                    // Re-serialising a value that was just parsed cannot fail.
                    spec => serde_yaml::to_string(spec).unwrap_or_default(),
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PSK: &str = "8f1302643b0809279794c5cc47f236561d7442b85d748bd7d1a58adfbe9ff431";

    fn config_with_group(group: &str) -> String {
        format!("listen:\n- 127.0.0.1:8282\ngroups:\n- id: 1000\n  psk: {PSK}\n{group}")
    }

    fn error_of(text: &str) -> (String, String) {
        Config::parse(text).expect_err("config should be refused")
    }

    #[test]
    fn seed_readme_example_loads() {
        let text = format!(
            "listen:\n- 239.82.71.65:8271\n- 127.0.0.1:8282\ngroups:\n- id: 1000\n  psk: {PSK}\n  expire: 15s\n  clock_skew: 10s\n  readiness_delay: 15s\noutputs:\n- kind: noop\n  spec:\n- kind: log\n  spec:\n    interval: 60s\n"
        );
        let config = Config::parse(&text).expect("valid config");
        assert_eq!(config.listen.len(), 2);
        assert_eq!(config.groups[0].expire.get(), Duration::from_secs(15));
        assert_eq!(config.groups[0].effective_clock_skew(), Duration::from_secs(10));
        let outputs = config.output_configs();
        assert_eq!(outputs[0].spec_yaml, "");
        assert!(outputs[1].spec_yaml.contains("interval: 60s"));
    }

    #[test]
    fn bad_duration_names_the_key_and_text() {
        let (key, message) = error_of(&config_with_group("  expire: 15 parsecs\n"));
        assert_eq!(key, "groups[0].expire");
        assert!(message.contains("15 parsecs"), "{message}");
        assert!(message.contains("line"), "{message}");
    }

    #[test]
    fn short_psk_is_refused_with_its_key() {
        let text = "listen:\n- 127.0.0.1:1\ngroups:\n- id: 1\n  psk: abcd\n  expire: 1s\n";
        let (key, message) = error_of(text);
        assert_eq!(key, "groups[0].psk");
        assert!(message.contains("64"), "{message}");
    }

    #[test]
    fn unknown_keys_are_errors_at_every_level() {
        let (key, message) = error_of(&config_with_group("  expire: 1s\n  expiry: 2s\n"));
        assert_eq!(key, "groups[0].expiry");
        assert!(message.contains("unknown field `expiry`"), "{message}");
        let (_, message) =
            error_of(&format!("{}listne: []\n", config_with_group("  expire: 1s\n")));
        assert!(message.contains("unknown field `listne`"), "{message}");
    }

    #[test]
    fn duplicate_group_and_empty_listen_are_refused() {
        let text = format!(
            "listen:\n- 127.0.0.1:1\ngroups:\n- id: 5\n  psk: {PSK}\n  expire: 1s\n- id: 5\n  psk: {PSK}\n  expire: 1s\n"
        );
        assert_eq!(error_of(&text).0, "groups[1].id");
        let text = format!("listen: []\ngroups:\n- id: 5\n  psk: {PSK}\n  expire: 1s\n");
        assert_eq!(error_of(&text).0, "listen");
    }

    #[test]
    fn zero_expire_and_bad_listen_address_are_refused() {
        assert_eq!(error_of(&config_with_group("  expire: 0s\n")).0, "groups[0].expire");
        let text = format!("listen:\n- nonsense\ngroups:\n- id: 5\n  psk: {PSK}\n  expire: 1s\n");
        let (key, message) = error_of(&text);
        assert_eq!(key, "listen[0]");
        assert!(message.contains("nonsense"), "{message}");
    }

    #[test]
    fn http_listen_is_optional_and_checked() {
        let config = Config::parse(&config_with_group("  expire: 1s\n")).unwrap();
        assert!(config.http.is_none());
        let text =
            format!("{}http:\n  listen: 127.0.0.1:9253\n", config_with_group("  expire: 1s\n"));
        let listen = Config::parse(&text).unwrap().http.unwrap().listen;
        assert_eq!(listen, "127.0.0.1:9253".parse().unwrap());
        let text = format!("{}http:\n  listen: nonsense\n", config_with_group("  expire: 1s\n"));
        let (key, message) = error_of(&text);
        assert_eq!(key, "http.listen");
        assert!(message.contains("\"nonsense\""), "{message}");
        let text = format!("{}http:\n  listne: 1.2.3.4:5\n", config_with_group("  expire: 1s\n"));
        assert_eq!(error_of(&text).0, "http.listne");
    }

    #[test]
    fn clock_skew_of_zero_or_above_expire_means_expire() {
        let config =
            Config::parse(&config_with_group("  expire: 15s\n  clock_skew: 1m\n")).unwrap();
        assert_eq!(config.groups[0].effective_clock_skew(), Duration::from_secs(15));
        let config = Config::parse(&config_with_group("  expire: 15s\n")).unwrap();
        assert_eq!(config.groups[0].effective_clock_skew(), Duration::from_secs(15));
    }
}
