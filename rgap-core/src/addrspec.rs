//! Address specs as operators write them: `host:port`, `[v6]:port`, `:port`, optionally
//! followed by `@eth0` (an interface name) or `@192.168.0.0/16` (the interface that has an
//! address in that network).
//!
//! Used by the agent for destinations and by the listener for listen addresses. Hosts are IP
//! literals only: resolving names would make startup depend on DNS, which rgap often feeds.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use nix::ifaddrs::getifaddrs;

/// What `host:port@...` says about the interface to use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InterfaceSelector {
    /// An interface by name, e.g. `eth0`.
    Name(String),
    /// The interface that has an address inside this network.
    Cidr(IpNet),
}

/// A parsed address spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddrSpec {
    /// The socket address; an empty host means `0.0.0.0`.
    pub addr: SocketAddr,
    /// The interface after `@`, if any.
    pub interface: Option<InterfaceSelector>,
}

/// An interface found on this host for an [`InterfaceSelector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Name, e.g. `eth0`.
    pub name: String,
    /// Kernel index, for IPv6 multicast options.
    pub index: u32,
    /// The interface's IPv4 address (the matching one for a CIDR selector), for IPv4
    /// multicast options.
    pub ipv4: Option<Ipv4Addr>,
}

/// Why a spec was refused or its interface not found; every message quotes the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrSpecError {
    /// The text is not `host:port[@interface]`.
    #[error("invalid address {spec:?}: {reason} (use e.g. 239.82.71.65:8271, [ff02::1]:8271, 10.0.0.1:8271@eth0 or 239.82.71.65:8271@192.168.0.0/16)")]
    Syntax {
        /// The spec as given.
        spec: String,
        /// What was wrong.
        reason: String,
    },
    /// No interface has that name.
    #[error("{spec}: no network interface named {name:?}")]
    NoSuchInterface {
        /// The spec as given.
        spec: String,
        /// The interface name asked for.
        name: String,
    },
    /// No interface has an address in that network.
    #[error("{spec}: no network interface has an address in {net}")]
    NoInterfaceInNetwork {
        /// The spec as given.
        spec: String,
        /// The network asked for.
        net: IpNet,
    },
    /// Listing the interfaces failed.
    #[error("{spec}: cannot list network interfaces: {error}")]
    Os {
        /// The spec as given.
        spec: String,
        /// The OS error.
        error: String,
    },
}

impl AddrSpec {
    /// Parses `host:port`, `[v6]:port` or `:port`, each optionally followed by `@iface` or
    /// `@ip/prefix`.
    pub fn parse(spec: &str) -> Result<Self, AddrSpecError> {
        let syntax = |reason: String| AddrSpecError::Syntax { spec: spec.to_string(), reason };
        // Interface names and networks never contain '@', and neither does an address.
        let (host_port, selector) = match spec.split_once('@') {
            Some((host_port, selector)) => (host_port, Some(selector)),
            None => (spec, None),
        };
        let addr = parse_host_port(host_port).map_err(syntax)?;
        let interface = selector.map(parse_selector).transpose().map_err(syntax)?;
        Ok(Self { addr, interface })
    }

    /// Finds the interface the spec names, or `None` when it names none.
    pub fn resolve_interface(&self) -> Result<Option<Interface>, AddrSpecError> {
        let Some(selector) = &self.interface else {
            return Ok(None);
        };
        let spec = self.to_string();
        let addrs = interface_addresses()
            .map_err(|error| AddrSpecError::Os { spec: spec.clone(), error })?;
        let found = match selector {
            InterfaceSelector::Name(name) => find_by_name(&addrs, name).ok_or_else(|| {
                AddrSpecError::NoSuchInterface { spec: spec.clone(), name: name.clone() }
            }),
            InterfaceSelector::Cidr(net) => find_in_network(&addrs, net).ok_or_else(|| {
                AddrSpecError::NoInterfaceInNetwork { spec: spec.clone(), net: *net }
            }),
        }?;
        Ok(Some(found))
    }
}

impl FromStr for AddrSpec {
    type Err = AddrSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Prints the spec back in the form it is parsed from.
impl fmt::Display for AddrSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)?;
        match &self.interface {
            Some(InterfaceSelector::Name(name)) => write!(f, "@{name}"),
            Some(InterfaceSelector::Cidr(net)) => write!(f, "@{net}"),
            None => Ok(()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for AddrSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn parse_host_port(text: &str) -> Result<SocketAddr, String> {
    if let Some(bracketed) = text.strip_prefix('[') {
        let (host, rest) = bracketed.split_once(']').ok_or("missing ']' after IPv6 address")?;
        let port = rest.strip_prefix(':').ok_or("missing :port")?;
        let ip: Ipv6Addr = host.parse().map_err(|_| format!("{host:?} is not an IPv6 address"))?;
        return Ok(SocketAddr::new(IpAddr::V6(ip), parse_port(port)?));
    }
    let (host, port) = text.rsplit_once(':').ok_or("missing :port")?;
    if host.contains(':') {
        return Err("put an IPv6 address in brackets, as [::1]:8271".into());
    }
    let ip = if host.is_empty() {
        // ":8253" means every local address, as in the Go rgap.
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        host.parse()
            .map_err(|_| format!("{host:?} is not an IP address; host names are not resolved"))?
    };
    Ok(SocketAddr::new(ip, parse_port(port)?))
}

fn parse_port(port: &str) -> Result<u16, String> {
    port.parse().map_err(|_| format!("{port:?} is not a port number (0-65535)"))
}

fn parse_selector(text: &str) -> Result<InterfaceSelector, String> {
    if text.is_empty() {
        return Err("empty interface after '@'".into());
    }
    if text.contains('/') {
        let net: IpNet = text
            .parse()
            .map_err(|_| format!("{text:?} is not a network such as 192.168.0.0/16"))?;
        return Ok(InterfaceSelector::Cidr(net));
    }
    Ok(InterfaceSelector::Name(text.to_string()))
}

/// One (interface, address) pair as the OS lists them.
struct IfAddr {
    name: String,
    ip: Option<IpAddr>,
}

fn interface_addresses() -> Result<Vec<IfAddr>, String> {
    let list = getifaddrs().map_err(|e| e.to_string())?;
    Ok(list
        .map(|entry| IfAddr {
            ip: entry.address.as_ref().and_then(ip_of),
            name: entry.interface_name,
        })
        .collect())
}

fn ip_of(addr: &nix::sys::socket::SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

fn find_by_name(addrs: &[IfAddr], name: &str) -> Option<Interface> {
    addrs.iter().find(|a| a.name == name)?;
    let ipv4 = addrs.iter().filter(|a| a.name == name).find_map(|a| match a.ip {
        Some(IpAddr::V4(v4)) => Some(v4),
        _ => None,
    });
    interface(name, ipv4)
}

fn find_in_network(addrs: &[IfAddr], net: &IpNet) -> Option<Interface> {
    let (name, ip) = addrs.iter().find_map(|a| match a.ip {
        Some(ip) if net.contains(&ip) => Some((a.name.as_str(), ip)),
        _ => None,
    })?;
    // Prefer the address that matched; for an IPv6 network fall back to any IPv4 one.
    let ipv4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => find_by_name(addrs, name).and_then(|i| i.ipv4),
    };
    interface(name, ipv4)
}

fn interface(name: &str, ipv4: Option<Ipv4Addr>) -> Option<Interface> {
    let index = nix::net::if_::if_nametoindex(name).ok()?;
    Some(Interface { name: name.to_string(), index, ipv4 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AddrSpec {
        AddrSpec::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn reason(text: &str) -> String {
        match AddrSpec::parse(text).unwrap_err() {
            AddrSpecError::Syntax { reason, .. } => reason,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn parses_plain_v4_and_v6() {
        assert_eq!(parse("239.82.71.65:8271").addr, "239.82.71.65:8271".parse().unwrap());
        assert_eq!(parse("[ff02::1]:8271").addr, "[ff02::1]:8271".parse().unwrap());
        assert_eq!(parse("127.0.0.1:8271").interface, None);
    }

    #[test]
    fn empty_host_means_every_address() {
        assert_eq!(parse(":8253").addr, "0.0.0.0:8253".parse().unwrap());
    }

    #[test]
    fn parses_interface_name_and_network() {
        let by_name = parse("239.82.71.65:8271@eth0");
        assert_eq!(by_name.interface, Some(InterfaceSelector::Name("eth0".into())));
        let by_net = parse("239.82.71.65:8271@192.168.0.0/16");
        assert_eq!(
            by_net.interface,
            Some(InterfaceSelector::Cidr("192.168.0.0/16".parse().unwrap()))
        );
        let v6 = parse("[ff02::1]:8271@fd00::/8");
        assert_eq!(v6.interface, Some(InterfaceSelector::Cidr("fd00::/8".parse().unwrap())));
    }

    #[test]
    fn display_round_trips() {
        for text in ["239.82.71.65:8271", "[ff02::1]:8271@eth0", "10.0.0.1:1@10.0.0.0/8"] {
            assert_eq!(parse(text).to_string(), text);
        }
    }

    #[test]
    fn rejects_bad_specs_with_a_reason() {
        assert!(reason("example.com:8271").contains("not an IP address"));
        assert!(reason("127.0.0.1").contains("missing :port"));
        assert!(reason("127.0.0.1:99999").contains("not a port number"));
        assert!(reason("::1:8271").contains("brackets"));
        assert!(reason("[::1:8271").contains("missing ']'"));
        assert!(reason("[::1]8271").contains("missing :port"));
        assert!(reason("127.0.0.1:8271@").contains("empty interface"));
        assert!(reason("127.0.0.1:8271@10.0.0.0/99").contains("not a network"));
    }

    #[test]
    fn errors_quote_the_spec() {
        let err = AddrSpec::parse("nowhere:1").unwrap_err().to_string();
        assert!(err.starts_with("invalid address \"nowhere:1\": "), "{err}");
    }

    #[test]
    fn no_interface_selector_resolves_to_none() {
        assert_eq!(parse("127.0.0.1:8271").resolve_interface().unwrap(), None);
    }

    #[test]
    fn resolves_loopback_by_name() {
        let lo = parse("127.0.0.1:8271@lo").resolve_interface().unwrap().unwrap();
        assert_eq!(lo.name, "lo");
        assert!(lo.index > 0);
        assert_eq!(lo.ipv4, Some(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn resolves_loopback_by_network() {
        let lo = parse("127.0.0.1:8271@127.0.0.0/8").resolve_interface().unwrap().unwrap();
        assert_eq!(lo.name, "lo");
        assert_eq!(lo.ipv4, Some(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn unknown_interface_is_a_clear_error() {
        let err = parse("127.0.0.1:8271@nosuch0").resolve_interface().unwrap_err();
        assert_eq!(
            err.to_string(),
            "127.0.0.1:8271@nosuch0: no network interface named \"nosuch0\""
        );
        // No interface can hold 0.0.0.0 itself, whatever network this machine is on.
        let err = parse("127.0.0.1:8271@0.0.0.0/32").resolve_interface().unwrap_err();
        assert_eq!(
            err.to_string(),
            "127.0.0.1:8271@0.0.0.0/32: no network interface has an address in 0.0.0.0/32"
        );
    }

    #[test]
    fn deserializes_from_a_string() {
        let spec: AddrSpec = serde_yaml::from_str("\"127.0.0.1:8282@lo\"").unwrap();
        assert_eq!(spec.to_string(), "127.0.0.1:8282@lo");
        assert!(serde_yaml::from_str::<AddrSpec>("bogus").is_err());
    }
}
