//! `spec:` of a `dns` output, with the Go rgap's keys plus `max_answers` and `rate_limit`,
//! and the checks that turn it into a [`Config`]: the bind address, every mapped name, every
//! fallback address and the limits are validated here, without side effects, so that a
//! mistake stops rgap at start (or `rgap validate`) with the key that holds it.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use hickory_server::proto::rr::{LowerName, Name};
use serde::Deserialize;

/// `spec:` as written in YAML. Unknown keys are errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSpec {
    /// `host:port`; `:port` means every address.
    bind_address: String,
    /// Name → group. Absent or null: no names (every query is NXDOMAIN).
    #[serde(default)]
    mappings: Option<BTreeMap<String, MappingSpec>>,
    /// Compress names in responses (off by default, as in the Go rgap).
    #[serde(default)]
    compress: bool,
    /// Leave the AA bit clear.
    #[serde(default)]
    non_authoritative: bool,
    /// At most this many addresses in one answer, over UDP and TCP. Absent: as many as fit.
    #[serde(default)]
    max_answers: Option<u64>,
    /// Response rate limiting per client prefix, over UDP. Absent: no limit.
    #[serde(default)]
    rate_limit: Option<RateLimitSpec>,
    /// Test builds only (feature `fault-injection`): panic on demand.
    #[cfg(feature = "fault-injection")]
    #[serde(default)]
    pub fault_injection: Option<crate::fault::FaultSpec>,
}

/// `rate_limit:` as written in YAML.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitSpec {
    responses_per_second: u64,
    #[serde(default = "default_slip")]
    slip: u64,
}

/// BIND's and Knot's default: every second limited answer goes out truncated.
fn default_slip() -> u64 {
    2
}

/// The largest `slip` accepted, as in BIND.
const MAX_SLIP: u64 = 10;
/// The largest `responses_per_second` accepted: beyond it the limit would mean nothing.
const MAX_RESPONSES_PER_SECOND: u64 = 1_000_000;

/// One entry of `mappings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingSpec {
    group: u64,
    #[serde(default)]
    fallback_addresses: Option<Vec<String>>,
}

/// Where to listen: every address (`:port`) or one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindTarget {
    /// `:port`: IPv6 and IPv4 on every interface (`[::]` dual-stack, or `0.0.0.0` where the
    /// host has no IPv6).
    Any(u16),
    /// An explicit host: only there.
    One(SocketAddr),
}

/// A mapped name, checked.
#[derive(Debug, Clone)]
pub struct MappedName {
    /// The key as the operator wrote it, for messages.
    pub key: String,
    pub group: u64,
    pub fallback_v4: Vec<Ipv4Addr>,
    pub fallback_v6: Vec<Ipv6Addr>,
}

/// Response rate limiting, checked: every client prefix (/24 for IPv4, /56 for IPv6) gets
/// `responses_per_second` UDP responses a second; of the queries over that, every `slip`-th
/// is answered truncated (0: none) and the others dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub responses_per_second: u32,
    pub slip: u32,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    pub bind: BindTarget,
    /// Keyed by the lower-case fully qualified name, which is how queries are looked up.
    pub names: HashMap<LowerName, MappedName>,
    pub compress: bool,
    pub authoritative: bool,
    /// Addresses per answer at most (`usize::MAX` when not set).
    pub max_answers: usize,
    pub rate_limit: Option<RateLimit>,
}

impl Config {
    /// Checks `spec`; every error starts with the key path, e.g.
    /// `spec.mappings.worker.example.com.fallback_addresses[1]: invalid IP address "1.2.3"`.
    /// Only reads `spec` (and resolves a host name in `bind_address`): `validate` runs it.
    pub fn from_spec(spec: &DnsSpec) -> Result<Config, String> {
        let bind = parse_bind_address(&spec.bind_address)
            .map_err(|why| format!("spec.bind_address: {why}"))?;
        let mut names: HashMap<LowerName, MappedName> = HashMap::new();
        for (key, mapping) in spec.mappings.iter().flatten() {
            let at = format!("spec.mappings.{key}");
            let name = parse_name(key).map_err(|why| format!("{at}: {why}"))?;
            let mut fallback_v4 = Vec::new();
            let mut fallback_v6 = Vec::new();
            for (index, text) in mapping.fallback_addresses.iter().flatten().enumerate() {
                match text.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
                    Ok(IpAddr::V4(v4)) => fallback_v4.push(v4),
                    Ok(IpAddr::V6(v6)) => fallback_v6.push(v6),
                    Err(_) => {
                        return Err(format!(
                            "{at}.fallback_addresses[{index}]: invalid IP address {text:?}"
                        ))
                    }
                }
            }
            let mapped =
                MappedName { key: key.clone(), group: mapping.group, fallback_v4, fallback_v6 };
            if let Some(earlier) = names.insert(name, mapped) {
                return Err(format!(
                    "{at}: the same name as {:?} (names ignore case)",
                    earlier.key
                ));
            }
        }
        let max_answers = match spec.max_answers {
            None => usize::MAX,
            Some(0) => {
                return Err("spec.max_answers: must be at least 1 (leave it out for as many \
                            answers as fit)"
                    .to_owned())
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let rate_limit = spec.rate_limit.as_ref().map(check_rate_limit).transpose()?;
        Ok(Config {
            bind,
            names,
            compress: spec.compress,
            authoritative: !spec.non_authoritative,
            max_answers,
            rate_limit,
        })
    }
}

fn check_rate_limit(spec: &RateLimitSpec) -> Result<RateLimit, String> {
    if !(1..=MAX_RESPONSES_PER_SECOND).contains(&spec.responses_per_second) {
        return Err(format!(
            "spec.rate_limit.responses_per_second: {} is not between 1 and \
             {MAX_RESPONSES_PER_SECOND} (leave rate_limit out for no limit)",
            spec.responses_per_second
        ));
    }
    if spec.slip > MAX_SLIP {
        return Err(format!(
            "spec.rate_limit.slip: {} is not between 0 and {MAX_SLIP} (0 drops every limited \
             answer, 1 truncates every one, 2 every second one)",
            spec.slip
        ));
    }
    // Both fit in u32: checked against the bounds above.
    Ok(RateLimit { responses_per_second: spec.responses_per_second as u32, slip: spec.slip as u32 })
}

/// `:8253`, `0.0.0.0:53`, `[::1]:53`, `localhost:5353`. A host name binds the first address
/// it resolves to, as Go's `net.Listen` does.
fn parse_bind_address(text: &str) -> Result<BindTarget, String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?} is not host:port (use e.g. \":8253\" or \"127.0.0.1:53\")"));
    };
    let port: u16 =
        port.parse().map_err(|_| format!("{text:?}: port {port:?} is not a number 0-65535"))?;
    if host.is_empty() {
        return Ok(BindTarget::Any(port));
    }
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(BindTarget::One(SocketAddr::new(ip, port)));
    }
    let mut resolved = (host, port)
        .to_socket_addrs()
        .map_err(|error| format!("{text:?}: cannot resolve {host:?}: {error}"))?;
    resolved
        .next()
        .map(BindTarget::One)
        .ok_or_else(|| format!("{text:?}: {host:?} resolves to no address"))
}

/// A host name as it may appear in a query: labels of letters, digits, `-` and `_`, each
/// 1-63 characters, 253 characters in all; the trailing dot is optional.
fn parse_name(text: &str) -> Result<LowerName, String> {
    let bare = text.strip_suffix('.').unwrap_or(text);
    if bare.is_empty() {
        return Err("invalid DNS name: empty".to_owned());
    }
    if bare.len() > 253 {
        return Err(format!("invalid DNS name {text:?}: longer than 253 characters"));
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return Err(format!("invalid DNS name {text:?}: empty label"));
        }
        if label.len() > 63 {
            return Err(format!(
                "invalid DNS name {text:?}: label {label:?} is over 63 characters"
            ));
        }
        if let Some(bad) =
            label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "invalid DNS name {text:?}: {bad:?} is not allowed (letters, digits, '-', '_')"
            ));
        }
    }
    let mut name =
        Name::from_ascii(bare).map_err(|error| format!("invalid DNS name {text:?}: {error}"))?;
    name.set_fqdn(true);
    Ok(LowerName::new(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<Config, String> {
        let spec: DnsSpec = rgap_plugin_api::decode_spec(yaml).map_err(|e| e.to_string())?;
        Config::from_spec(&spec)
    }

    #[test]
    fn go_example_parses() {
        let config = spec(
            "bind_address: :8253\nmappings:\n  worker.example.com:\n    group: 1000\n    \
             fallback_addresses: [1.2.3.4, 5.6.7.8, '2001:db8::1']\n  Worker.Example.ORG.:\n    \
             group: 1000\n",
        )
        .unwrap();
        assert_eq!(config.bind, BindTarget::Any(8253));
        assert_eq!(config.max_answers, usize::MAX);
        assert_eq!(config.rate_limit, None);
        assert!(!config.compress);
        assert!(config.authoritative);
        let com = LowerName::new(&Name::from_ascii("worker.example.com.").unwrap());
        let org = LowerName::new(&Name::from_ascii("worker.example.org.").unwrap());
        assert_eq!(config.names[&com].fallback_v4.len(), 2);
        assert_eq!(config.names[&com].fallback_v6, ["2001:db8::1".parse::<Ipv6Addr>().unwrap()]);
        assert!(config.names[&org].fallback_v4.is_empty());
    }

    #[test]
    fn bind_addresses() {
        assert_eq!(parse_bind_address(":53").unwrap(), BindTarget::Any(53));
        assert_eq!(
            parse_bind_address("127.0.0.1:53").unwrap(),
            BindTarget::One("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            parse_bind_address("[::1]:53").unwrap(),
            BindTarget::One("[::1]:53".parse().unwrap())
        );
        assert!(parse_bind_address("127.0.0.1").is_err());
        assert!(parse_bind_address("127.0.0.1:99999").is_err());
    }

    #[test]
    fn errors_name_the_key() {
        let error = spec("bind_address: :53\nmappings:\n  bad..name:\n    group: 1\n").unwrap_err();
        assert!(error.starts_with("spec.mappings.bad..name: invalid DNS name"), "{error}");
        let error = spec(
            "bind_address: :53\nmappings:\n  a.b:\n    group: 1\n    \
             fallback_addresses: [1.2.3.4, 1.2.3]\n",
        )
        .unwrap_err();
        assert_eq!(error, "spec.mappings.a.b.fallback_addresses[1]: invalid IP address \"1.2.3\"");
        let error = spec("bind_address: nope\n").unwrap_err();
        assert!(error.starts_with("spec.bind_address: "), "{error}");
        let error = spec("bind_address: :53\ncompres: true\n").unwrap_err();
        assert!(error.contains("compres"), "{error}");
        let error =
            spec("bind_address: :53\nmappings:\n  a.b:\n    group: 1\n  A.B.:\n    group: 2\n")
                .unwrap_err();
        assert!(error.contains("the same name"), "{error}");
    }

    #[test]
    fn limits() {
        let config =
            spec("bind_address: :53\nmax_answers: 8\nrate_limit: {responses_per_second: 20}\n")
                .unwrap();
        assert_eq!(config.max_answers, 8);
        assert_eq!(config.rate_limit, Some(RateLimit { responses_per_second: 20, slip: 2 }));
        let config =
            spec("bind_address: :53\nrate_limit: {responses_per_second: 5, slip: 0}\n").unwrap();
        assert_eq!(config.rate_limit, Some(RateLimit { responses_per_second: 5, slip: 0 }));

        let error = spec("bind_address: :53\nmax_answers: 0\n").unwrap_err();
        assert!(error.starts_with("spec.max_answers: must be at least 1"), "{error}");
        let error = spec("bind_address: :53\nmax_answers: -1\n").unwrap_err();
        assert!(error.starts_with("spec.max_answers: invalid value"), "{error}");
        let error = spec("bind_address: :53\nrate_limit: {responses_per_second: 0}\n").unwrap_err();
        assert!(error.starts_with("spec.rate_limit.responses_per_second: 0 is not"), "{error}");
        let error = spec("bind_address: :53\nrate_limit: {responses_per_second: 5, slip: 11}\n")
            .unwrap_err();
        assert!(error.starts_with("spec.rate_limit.slip: 11 is not"), "{error}");
        let error = spec("bind_address: :53\nrate_limit: {slip: 2}\n").unwrap_err();
        assert!(error.starts_with("spec.rate_limit: missing field `responses_per_second`"));
        let error = spec("bind_address: :53\nrate_limit: {responses_per_second: 5, window: 1}\n")
            .unwrap_err();
        assert!(error.starts_with("spec.rate_limit.window: unknown field"), "{error}");
    }
}
