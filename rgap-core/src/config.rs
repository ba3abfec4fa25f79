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
use crate::psk::PskList;

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
    /// Files that hold pre-shared keys (this config if a group has `psk:`, each `psk_file`),
    /// filled by [`Config::load`] for [`Config::key_file_warnings`].
    #[serde(skip)]
    pub key_files: Vec<PathBuf>,
    /// The monitoring endpoint (`/metrics`, `/health`, `/ready`, `/v1/members`); without
    /// it nothing listens.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// Sockets (each read by a thread of its own) per unicast `listen` address, sharing it
    /// with `SO_REUSEPORT`; absent means one per core, at most [`MAX_DEFAULT_WORKERS`].
    #[serde(default)]
    pub workers: Option<u32>,
}

/// Unicast sockets per `listen` address when `workers` is not given: one per core, at most
/// this many (past a few, the group table, one thread, is the limit).
pub const MAX_DEFAULT_WORKERS: usize = 4;
/// The most `workers` accepted.
pub const MAX_WORKERS: u32 = 64;

/// `http:`: where the monitoring endpoint listens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub id: u64,
    /// The group's keys: one or a list, any of which verifies (to rotate: add the new key,
    /// switch the agents, remove the old). Filled from `psk_file` by [`Config::load`].
    #[serde(default)]
    pub psk: PskList,
    /// Instead of `psk`: a file of keys, one per line (relative to the config's directory).
    #[serde(default)]
    pub psk_file: Option<PathBuf>,
    /// How long an address stays past its announcement's timestamp.
    pub expire: GoDuration,
    /// Allowed difference between our clock and the announcement's; 0 or more than `expire`
    /// means `expire`.
    #[serde(default)]
    pub clock_skew: GoDuration,
    /// How long after start the group is reported ready to outputs.
    #[serde(default)]
    pub readiness_delay: GoDuration,
    /// If not empty, only addresses inside one of these networks may be members.
    #[serde(default)]
    pub allowed_networks: Vec<Network>,
    /// If set, new addresses beyond this many members are dropped (`group_full`).
    #[serde(default)]
    pub max_members: Option<u32>,
}

/// A network in `allowed_networks`: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(pub ipnet::IpNet);

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let parsed = match text.parse::<ipnet::IpNet>() {
            Ok(net) => Ok(net),
            Err(_) => text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from),
        };
        parsed.map(Network).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid network {text:?} (use e.g. 10.0.0.0/8, 2001:db8::/32 or one address)"
            ))
        })
    }
}

impl GroupConfig {
    /// Exactly one of `psk` and `psk_file`; `max_members` not 0.
    fn validate_keys_and_limits(&self, index: usize) -> Result<(), (String, String)> {
        match (self.psk.is_empty(), &self.psk_file) {
            (true, None) => {
                return Err((
                    format!("groups[{index}].psk"),
                    "required: a key (64 hex characters), a list of keys, or psk_file".into(),
                ))
            }
            (false, Some(_)) => {
                return Err((
                    format!("groups[{index}].psk_file"),
                    "give psk or psk_file, not both".into(),
                ))
            }
            _ => {}
        }
        if self.max_members == Some(0) {
            return Err((
                format!("groups[{index}].max_members"),
                "must be greater than 0 (leave it out for no limit)".into(),
            ));
        }
        Ok(())
    }

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
    /// The spec as YAML text ("" when absent), for the plugin to decode. Kept as text, not
    /// as a parsed value, because the running config is held for reloads: with 10 000
    /// mappings a `serde_yaml::Value` costs about 450 bytes each, the text about 40.
    #[serde(default, rename = "spec", deserialize_with = "spec_as_text")]
    pub spec_yaml: String,
}

fn spec_as_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match serde_yaml::Value::deserialize(deserializer)? {
        serde_yaml::Value::Null => Ok(String::new()),
        // Re-serialising a value that was just parsed cannot fail.
        spec => Ok(serde_yaml::to_string(&spec).unwrap_or_default()),
    }
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
        config.read_key_files(path, base)?;
        Ok(config)
    }

    /// Fills each group's keys from its `psk_file` (relative to `base`) and records which
    /// files hold keys.
    fn read_key_files(&mut self, path: &Path, base: &Path) -> Result<(), ConfigError> {
        if self.groups.iter().any(|group| group.psk_file.is_none()) {
            self.key_files.push(path.to_path_buf());
        }
        for (index, group) in self.groups.iter_mut().enumerate() {
            let Some(file) = &mut group.psk_file else { continue };
            if file.is_relative() {
                *file = base.join(&*file);
            }
            let error = |message: String| ConfigError {
                file: path.to_path_buf(),
                key: format!("groups[{index}].psk_file"),
                message,
            };
            let keys = crate::psk::read_key_file(file).map_err(error)?;
            group.psk = PskList::from(keys);
            if !self.key_files.contains(file) {
                self.key_files.push(file.clone());
            }
        }
        Ok(())
    }

    /// One warning for each file holding keys that users other than its owner may read:
    /// `<file> is readable by others (mode 0644) and holds pre-shared keys: chmod 600 it`.
    pub fn key_file_warnings(&self) -> Vec<String> {
        self.key_files
            .iter()
            .filter_map(|file| crate::psk::readable_by_others_warning(file))
            .collect()
    }

    /// Decodes and validates YAML text; errors are `(key path, message)`.
    pub fn parse(text: &str) -> Result<Config, (String, String)> {
        let deserializer = serde_yaml::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let key = error.path().to_string();
            let key = if key == "." { String::new() } else { key };
            let message = without_path_prefix(&key, error.into_inner().to_string());
            (key, message)
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
            group.validate_keys_and_limits(index)?;
        }
        if let Some(workers) = self.workers {
            if !(1..=MAX_WORKERS).contains(&workers) {
                return Err((
                    "workers".into(),
                    format!("must be between 1 and {MAX_WORKERS} (got {workers})"),
                ));
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

    /// Sockets per unicast `listen` address: `workers`, or one per core up to
    /// [`MAX_DEFAULT_WORKERS`].
    pub fn workers(&self) -> usize {
        match self.workers {
            Some(workers) => workers as usize,
            None => std::thread::available_parallelism()
                .map_or(1, |cores| cores.get())
                .min(MAX_DEFAULT_WORKERS),
        }
    }

    /// The outputs as the plugin host takes them, each spec as YAML text.
    pub fn output_configs(&self) -> Vec<OutputConfig> {
        self.outputs
            .iter()
            .map(|output| OutputConfig {
                kind: output.kind.clone(),
                spec_yaml: output.spec_yaml.clone(),
            })
            .collect()
    }
}

/// `message` without the path serde_yaml puts in front of an error raised inside a value
/// (`groups[0].psk: invalid hex ...`, or for a list element the list's path): the caller puts
/// `key` in front of the message, so it is said once.
fn without_path_prefix(key: &str, message: String) -> String {
    let Some((head, rest)) = message.split_once(": ") else { return message };
    let is_path_of_key = !head.is_empty()
        && key
            .strip_prefix(head)
            .is_some_and(|tail| tail.is_empty() || tail.starts_with('.') || tail.starts_with('['));
    if is_path_of_key {
        rest.to_string()
    } else {
        message
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
    fn errors_inside_a_value_do_not_repeat_the_key_in_the_message() {
        let text = "listen:\n- 127.0.0.1:1\ngroups:\n- id: 1\n  psk: zz\n  expire: 1s\n";
        for (text, key) in [
            (text.to_string(), "groups[0].psk"),
            (config_with_group("  expire: 15 parsecs\n"), "groups[0].expire"),
            (text.replace("127.0.0.1:1", "127.0.0.1"), "listen[0]"),
            (
                config_with_group("  expire: 1s\n  allowed_networks: [10.0.0.0/33]\n"),
                "groups[0].allowed_networks[0]",
            ),
        ] {
            let (got_key, message) = error_of(&text);
            assert_eq!(got_key, key);
            // Not even the path of the list an element is in.
            let list = key.strip_suffix("[0]").unwrap_or(key);
            assert!(!message.contains(list), "{list} repeated in {message:?}");
            assert!(message.contains("line"), "{message}");
        }
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

    #[test]
    fn psk_takes_one_key_or_a_list() {
        let other = "11".repeat(32);
        let text = format!(
            "listen:\n- 127.0.0.1:1\ngroups:\n- id: 1\n  psk:\n  - {PSK}\n  - {other}\n  expire: 1s\n"
        );
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.groups[0].psk.keys().len(), 2);
        let text = format!(
            "listen:\n- 127.0.0.1:1\ngroups:\n- id: 1\n  psk:\n  - {PSK}\n  - nope\n  expire: 1s\n"
        );
        assert_eq!(error_of(&text).0, "groups[0].psk[1]");
    }

    #[test]
    fn exactly_one_of_psk_and_psk_file() {
        let neither = "listen:\n- 127.0.0.1:1\ngroups:\n- id: 1\n  expire: 1s\n";
        let (key, message) = error_of(neither);
        assert_eq!(key, "groups[0].psk");
        assert!(message.contains("psk_file"), "{message}");
        let empty = "listen:\n- 127.0.0.1:1\ngroups:\n- id: 1\n  psk: []\n  expire: 1s\n";
        assert_eq!(error_of(empty).0, "groups[0].psk");
        let (key, message) = error_of(&config_with_group("  expire: 1s\n  psk_file: keys\n"));
        assert_eq!(key, "groups[0].psk_file");
        assert!(message.contains("not both"), "{message}");
    }

    fn write(path: &Path, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn psk_file_is_read_relative_to_the_config_and_warned_about_if_others_can_read_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        let other = "22".repeat(32);
        write(&dir.path().join("keys/g1"), &format!("# g1\n{other}\n{PSK}\n"), 0o640);
        let path = dir.path().join("rgap.yaml");
        write(
            &path,
            "listen:\n- 127.0.0.1:1\ngroups:\n- id: 1\n  psk_file: keys/g1\n  expire: 1s\n",
            0o600,
        );
        let config = Config::load(&path).unwrap();
        let keys: Vec<String> = config.groups[0].psk.keys().iter().map(|k| k.to_hex()).collect();
        assert_eq!(keys, [other, PSK.to_string()]);
        // The config holds no key itself: only the key file is named.
        let key_file = dir.path().join("keys/g1");
        assert_eq!(
            config.key_file_warnings(),
            [format!(
                "{} is readable by others (mode 0640) and holds pre-shared keys: chmod 600 it",
                key_file.display()
            )]
        );
        write(&key_file, PSK, 0o600);
        assert!(Config::load(&path).unwrap().key_file_warnings().is_empty());
    }

    #[test]
    fn a_config_holding_keys_is_warned_about_if_others_can_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rgap.yaml");
        write(&path, &config_with_group("  expire: 1s\n"), 0o644);
        let warnings = Config::load(&path).unwrap().key_file_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0]
            .starts_with(&format!("{} is readable by others (mode 0644)", path.display())));
    }

    #[test]
    fn unreadable_or_bad_key_files_name_the_key_the_file_and_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rgap.yaml");
        write(
            &path,
            &format!("listen:\n- 127.0.0.1:1\ngroups:\n- id: 1\n  psk: {PSK}\n  expire: 1s\n- id: 2\n  psk_file: missing\n  expire: 1s\n"),
            0o600,
        );
        let error = Config::load(&path).unwrap_err();
        assert_eq!(error.key, "groups[1].psk_file");
        assert!(
            error.message.contains("missing") && error.message.contains("cannot read"),
            "{error}"
        );
        write(&dir.path().join("missing"), &format!("{PSK}\n{PSK}0\n"), 0o600);
        let error = Config::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("groups[1].psk_file")
                && error.contains("line 2: expected 64 hex characters, got 65"),
            "{error}"
        );
    }

    #[test]
    fn allowed_networks_and_max_members_are_checked() {
        let config = Config::parse(&config_with_group(
            "  expire: 1s\n  allowed_networks: [10.0.0.0/8, '2001:db8::/32', 192.0.2.7]\n  max_members: 3\n",
        ))
        .unwrap();
        let nets: Vec<String> =
            config.groups[0].allowed_networks.iter().map(|n| n.0.to_string()).collect();
        assert_eq!(nets, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]);
        assert_eq!(config.groups[0].max_members, Some(3));
        let (key, message) =
            error_of(&config_with_group("  expire: 1s\n  allowed_networks: [10.0.0.0/33]\n"));
        assert_eq!(key, "groups[0].allowed_networks[0]");
        assert!(message.contains("10.0.0.0/33"), "{message}");
        assert_eq!(
            error_of(&config_with_group("  expire: 1s\n  max_members: 0\n")).0,
            "groups[0].max_members"
        );
    }

    #[test]
    fn workers_defaults_to_the_cores_up_to_a_cap_and_is_checked() {
        let text = config_with_group("  expire: 1s\n");
        let workers = Config::parse(&text).unwrap().workers();
        assert!((1..=MAX_DEFAULT_WORKERS).contains(&workers), "{workers}");
        let given = format!("workers: 3\n{text}");
        assert_eq!(Config::parse(&given).unwrap().workers(), 3);
        for bad in ["0", "65", "-1", "many"] {
            let (key, message) = error_of(&format!("workers: {bad}\n{text}"));
            assert_eq!(key, "workers", "{bad}: {message}");
        }
    }
}
