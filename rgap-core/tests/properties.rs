//! Property tests: the parsers that face the network or the operator never panic on any
//! input, what is signed decodes back to itself, and inputs built from known parts (a valid
//! datagram with one field changed, an address spec or duration assembled piece by piece) get
//! exactly the verdict an oracle written from the design gives them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use proptest::prelude::*;

use rgap_core::addrspec::{AddrSpec, InterfaceSelector};
use rgap_core::config::{Config, GroupConfig};
use rgap_core::duration::GoDuration;
use rgap_core::listener::{Checker, DropReason};
use rgap_core::protocol::{encode_signed, Announcement, Kind, RawAnnouncement, Verifier};
use rgap_core::psk::Psk;

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>()
            .prop_map(|o| IpAddr::V6(Ipv6Addr::from(o)))
            // A mapped IPv6 address is, on the wire, the same as the IPv4 one.
            .prop_filter("not IPv4-mapped", |ip| match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().is_none(),
                IpAddr::V4(_) => true,
            }),
    ]
}

fn any_announcement() -> impl Strategy<Value = Announcement> {
    (any::<u64>(), any::<i64>(), any_ip()).prop_map(|(group, timestamp_unix_us, address)| {
        Announcement { group, timestamp_unix_us, address }
    })
}

fn psk(key: [u8; 32]) -> Psk {
    Psk::from_hex(&hex::encode(key)).unwrap()
}

fn group(id: u64, key: [u8; 32]) -> GroupConfig {
    GroupConfig {
        id,
        psk: psk(key).into(),
        expire: GoDuration(Duration::from_secs(15)),
        ..GroupConfig::default()
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder_or_verifier(
        bytes in prop::collection::vec(any::<u8>(), 0..100),
        key in any::<[u8; 32]>(),
    ) {
        let _ = Verifier::new(&psk(key)).verify_and_decode(&bytes);
        if let Ok(raw) = RawAnnouncement::parse(&bytes) {
            let _ = raw.ip();
        }
    }

    #[test]
    fn arbitrary_datagrams_never_pass_or_panic_the_listener_checks(
        bytes in prop::collection::vec(any::<u8>(), 0..100),
        now in any::<i64>(),
    ) {
        let checker = Checker::new(&[group(1000, [7; 32]), group(u64::MAX, [9; 32])]);
        prop_assert!(checker.check(&bytes, now).is_err());
    }

    #[test]
    fn signed_announcements_verify_and_decode_to_themselves(
        announcement in any_announcement(),
        key in any::<[u8; 32]>(),
    ) {
        let datagram = encode_signed(&announcement, &psk(key));
        prop_assert_eq!(Verifier::new(&psk(key)).verify_and_decode(&datagram).unwrap(), announcement);
    }

    #[test]
    fn any_single_bit_flip_is_rejected(
        announcement in any_announcement(),
        key in any::<[u8; 32]>(),
        bit in 0usize..66 * 8,
    ) {
        let mut datagram = encode_signed(&announcement, &psk(key));
        datagram[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(Verifier::new(&psk(key)).verify_and_decode(&datagram).is_err());
    }

    #[test]
    fn accepted_announcements_expire_at_timestamp_plus_expire(
        announcement in any_announcement(),
        skew in -15_000_000i64..=15_000_000,
    ) {
        let key = [3u8; 32];
        let checker = Checker::new(&[group(announcement.group, key)]);
        let datagram = encode_signed(&announcement, &psk(key));
        let now = announcement.timestamp_unix_us.saturating_add(skew);
        // Addresses that stand for no single host are never members, whatever the signature.
        let no_host = match announcement.address {
            IpAddr::V4(v4) => v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast(),
            IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
        };
        match checker.check(&datagram, now) {
            Ok(accepted) => {
                prop_assert!(!no_host, "{} accepted", announcement.address);
                prop_assert_eq!(
                    accepted.expires_at_us,
                    announcement.timestamp_unix_us.saturating_add(15_000_000)
                );
            }
            Err(reason) => prop_assert_eq!((reason, no_host), (DropReason::AddressNotAllowed, true)),
        }
    }

    #[test]
    fn arbitrary_address_specs_never_panic(text in "\\PC{0,40}") {
        let _ = AddrSpec::parse(&text);
    }

    #[test]
    fn socket_addresses_round_trip_through_address_specs(ip in any_ip(), port in any::<u16>()) {
        let addr = SocketAddr::new(ip, port);
        let spec = AddrSpec::parse(&addr.to_string()).unwrap();
        prop_assert_eq!(spec.addr, addr);
        prop_assert_eq!(AddrSpec::parse(&spec.to_string()).unwrap(), spec);
    }

    #[test]
    fn arbitrary_yaml_never_panics_and_errors_say_something(text in "\\PC{0,200}") {
        if let Err((_, message)) = Config::parse(&text) {
            prop_assert!(!message.trim().is_empty());
        }
    }

    #[test]
    fn configs_built_from_parts_load_or_fail_naming_a_key(
        listen in prop::sample::select(vec!["127.0.0.1:8271", "[::1]:1", "239.82.71.65:8271@lo", "nonsense", ":8253"]),
        id in any::<u64>(),
        key in prop::sample::select(vec!["8f1302643b0809279794c5cc47f236561d7442b85d748bd7d1a58adfbe9ff431", "abc", "zz"]),
        expire in prop::sample::select(vec!["15s", "0s", "1m30s", "fast", "-1s", "1000000000"]),
        extra in prop::sample::select(vec!["", "  clock_skew: 5s\n", "  readiness_delay: x\n", "  bogus: 1\n"]),
    ) {
        let text = format!("listen:\n- \"{listen}\"\ngroups:\n- id: {id}\n  psk: {key}\n  expire: {expire}\n{extra}");
        match Config::parse(&text) {
            Ok(config) => prop_assert!(!config.groups[0].expire.get().is_zero()),
            Err((key, message)) => {
                prop_assert!(!message.is_empty());
                prop_assert!(key.starts_with("listen") || key.starts_with("groups"), "key {key:?}: {message}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Structured datagrams: a valid announcement or leave, built and signed here (independently
// of `protocol`), with exactly one thing changed. Random bytes almost never get past the
// length and group checks; these reach the version, clock-skew, signature and address checks,
// and an oracle written from the design says which must be accepted and why the others fail.

const GROUP_A: u64 = 1000;
const GROUP_B: u64 = 2000;
const KEY_A: [u8; 32] = [0xa1; 32];
const KEY_B: [u8; 32] = [0xb2; 32];
/// An arbitrary "now" for the checks, Unix µs.
const NOW: i64 = 1_800_000_000_000_000;

/// The fields of a datagram as they go on the wire.
#[derive(Debug, Clone, Copy)]
struct Fields {
    version: u16,
    group: u64,
    timestamp_us: i64,
    address: [u8; 16],
}

/// What the datagram's signature is: valid for its header with this key and context, or not.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Signed {
    With([u8; 32], &'static [u8]),
    Broken,
}

const ANNOUNCE: &[u8] = b"RGAP announce";
const LEAVE: &[u8] = b"RGAP leave";

fn header(fields: &Fields) -> [u8; 34] {
    let mut out = [0u8; 34];
    out[..2].copy_from_slice(&fields.version.to_be_bytes());
    out[2..10].copy_from_slice(&fields.group.to_be_bytes());
    out[10..18].copy_from_slice(&fields.timestamp_us.to_be_bytes());
    out[18..].copy_from_slice(&fields.address);
    out
}

fn hmac(key: &[u8; 32], context: &[u8], header: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(context);
    mac.update(header);
    mac.finalize().into_bytes().into()
}

fn datagram(fields: &Fields, key: &[u8; 32], context: &[u8]) -> Vec<u8> {
    let header = header(fields);
    [&header[..], &hmac(key, context, &header)].concat()
}

fn wire(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Whether `address` (as on the wire) stands for no single host: never a member.
fn no_host(address: [u8; 16]) -> bool {
    let ip = Ipv6Addr::from(address);
    match ip.to_ipv4_mapped() {
        Some(v4) => v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast(),
        None => ip.is_unspecified() || ip.is_multicast(),
    }
}

/// A group as configured in the property: id, key, expire and clock_skew in µs.
#[derive(Debug, Clone, Copy)]
struct Group {
    id: u64,
    key: [u8; 32],
    expire_us: i64,
    clock_skew_us: i64,
}

impl Group {
    /// The design: a `clock_skew` of 0 or more than `expire` means `expire`.
    fn skew_us(&self) -> i64 {
        if self.clock_skew_us == 0 || self.clock_skew_us > self.expire_us {
            self.expire_us
        } else {
            self.clock_skew_us
        }
    }

    fn config(&self) -> GroupConfig {
        GroupConfig {
            id: self.id,
            psk: psk(self.key).into(),
            expire: GoDuration(Duration::from_micros(self.expire_us as u64)),
            clock_skew: GoDuration(Duration::from_micros(self.clock_skew_us as u64)),
            ..GroupConfig::default()
        }
    }
}

/// The oracle: the checks of the design, in the design's order, on what was sent.
fn expected(
    groups: &[Group],
    len: usize,
    fields: &Fields,
    signed: Signed,
) -> Result<(u32, Kind, i64), DropReason> {
    if len != 66 {
        return Err(DropReason::WrongLength);
    }
    let index = groups.iter().position(|g| g.id == fields.group).ok_or(DropReason::UnknownGroup)?;
    let group = groups[index];
    let (kind, context) = match fields.version {
        0x0100 => (Kind::Announce, ANNOUNCE),
        0x0101 => (Kind::Leave, LEAVE),
        _ => return Err(DropReason::BadVersion),
    };
    if (NOW as i128 - fields.timestamp_us as i128).abs() > group.skew_us() as i128 {
        return Err(DropReason::ClockSkew);
    }
    if signed != Signed::With(group.key, context) {
        return Err(DropReason::BadSignature);
    }
    if no_host(fields.address) {
        return Err(DropReason::AddressNotAllowed);
    }
    Ok((index as u32, kind, fields.timestamp_us + group.expire_us))
}

/// The one change made to a valid datagram.
#[derive(Debug, Clone)]
enum Mutation {
    Nothing,
    /// Cut or padded to this many bytes (never 66).
    Length(usize),
    /// Another group id, signed correctly for it (with group A's key).
    GroupResigned(u64),
    /// The other configured group's id, the signature left as it was.
    OtherGroupUnsigned,
    /// Another version, signed correctly with the original's context.
    Version(u16),
    /// Another version, the signature left as it was.
    VersionUnsigned(u16),
    /// Another timestamp (see [`any_offset`]), signed correctly.
    Timestamp,
    /// Another timestamp (see [`any_offset`]), the signature left as it was.
    TimestampUnsigned,
    /// Another address, signed correctly.
    Address(IpAddr),
    /// Another address, the signature left as it was.
    AddressUnsigned(IpAddr),
    /// One bit of the signature flipped.
    SignatureBit(usize),
    /// Signed with group B's key, or the other kind's context.
    WrongKey,
    WrongContext,
}

/// Timestamp offsets from now: most near the ±skew edges (exactly on them, or a few µs
/// either side), some anywhere.
fn any_offset() -> impl Strategy<Value = (bool, i64)> {
    prop_oneof![
        3 => (any::<bool>(), -3i64..=3).prop_map(|(negative, delta)| (negative, delta)),
        1 => (any::<bool>(), -60_000_000i64..60_000_000).prop_map(|(negative, delta)| (negative, delta)),
    ]
}

fn any_mutation() -> impl Strategy<Value = Mutation> {
    let version =
        prop_oneof![Just(0x0100u16), Just(0x0101u16), Just(0x0000), Just(0x0200), any::<u16>()];
    prop_oneof![
        Just(Mutation::Nothing),
        prop_oneof![0usize..66, 67usize..200].prop_map(Mutation::Length),
        prop_oneof![Just(GROUP_B), Just(0u64), Just(u64::MAX), any::<u64>()]
            .prop_map(Mutation::GroupResigned),
        Just(Mutation::OtherGroupUnsigned),
        version.clone().prop_map(Mutation::Version),
        version.prop_map(Mutation::VersionUnsigned),
        Just(Mutation::Timestamp),
        Just(Mutation::TimestampUnsigned),
        prop_oneof![
            any_ip(),
            Just(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            Just(IpAddr::V4(Ipv4Addr::BROADCAST)),
            Just("239.82.71.65".parse().unwrap()),
            Just("ff02::1".parse().unwrap()),
            Just(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
        ]
        .prop_map(Mutation::Address),
        any_ip().prop_map(Mutation::AddressUnsigned),
        (0usize..256).prop_map(Mutation::SignatureBit),
        Just(Mutation::WrongKey),
        Just(Mutation::WrongContext),
    ]
}

/// An expire and a clock_skew (µs), with the special cases of the design often: a skew of
/// 0, equal to expire, more than expire.
fn any_timing() -> impl Strategy<Value = (i64, i64)> {
    (1i64..=120_000_000).prop_flat_map(|expire| {
        let skew = prop_oneof![
            Just(0i64),
            Just(expire),
            (expire + 1)..=(expire + 10_000_000),
            1i64..=expire,
        ];
        (Just(expire), skew)
    })
}

/// A timestamp for `group` from an (edge, delta) pair: `delta` µs past one of the skew
/// edges, or (for large deltas) anywhere near now.
fn timestamp_from(group: &Group, (negative, delta): (bool, i64)) -> i64 {
    let from_edge = if delta.abs() <= 3 { group.skew_us() + delta } else { delta };
    if negative {
        NOW - from_edge
    } else {
        NOW + from_edge
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn datagrams_with_one_field_changed_are_judged_as_the_design_says(
        (expire_a, skew_a) in any_timing(),
        (expire_b, skew_b) in any_timing(),
        leave in any::<bool>(),
        address in any_ip().prop_filter("a host", |ip| !no_host(wire(*ip))),
        within in 0.0f64..=1.0,
        negative in any::<bool>(),
        mutation in any_mutation(),
        offset in any_offset(),
    ) {
        let a = Group { id: GROUP_A, key: KEY_A, expire_us: expire_a, clock_skew_us: skew_a };
        let b = Group { id: GROUP_B, key: KEY_B, expire_us: expire_b, clock_skew_us: skew_b };
        let groups = [a, b];
        let checker = Checker::new(&[a.config(), b.config()]);
        let (version, context) = if leave { (0x0101, LEAVE) } else { (0x0100, ANNOUNCE) };
        // The original: valid, stamped anywhere within group A's skew.
        let within_us = (a.skew_us() as f64 * within) as i64;
        let original = Fields {
            version,
            group: GROUP_A,
            timestamp_us: if negative { NOW - within_us } else { NOW + within_us },
            address: wire(address),
        };
        let mut fields = original;
        let mut signed = Signed::With(KEY_A, context);
        let mut bytes = datagram(&original, &KEY_A, context);
        let resign = |fields: &Fields| datagram(fields, &KEY_A, context);
        match mutation {
            Mutation::Nothing => {}
            Mutation::Length(len) => bytes.resize(len, 0x5a),
            Mutation::GroupResigned(group) => {
                fields.group = group;
                bytes = resign(&fields);
            }
            Mutation::OtherGroupUnsigned => {
                fields.group = GROUP_B;
                bytes[..34].copy_from_slice(&header(&fields));
                signed = Signed::Broken;
            }
            Mutation::Version(v) => {
                fields.version = v;
                bytes = resign(&fields);
            }
            Mutation::VersionUnsigned(v) => {
                fields.version = v;
                bytes[..34].copy_from_slice(&header(&fields));
                if v != version {
                    signed = Signed::Broken;
                }
            }
            Mutation::Timestamp | Mutation::TimestampUnsigned => {
                fields.timestamp_us = timestamp_from(&a, offset);
                if matches!(mutation, Mutation::Timestamp) {
                    bytes = resign(&fields);
                } else {
                    bytes[..34].copy_from_slice(&header(&fields));
                    if fields.timestamp_us != original.timestamp_us {
                        signed = Signed::Broken;
                    }
                }
            }
            Mutation::Address(ip) => {
                fields.address = wire(ip);
                bytes = resign(&fields);
            }
            Mutation::AddressUnsigned(ip) => {
                fields.address = wire(ip);
                bytes[..34].copy_from_slice(&header(&fields));
                if fields.address != original.address {
                    signed = Signed::Broken;
                }
            }
            Mutation::SignatureBit(bit) => {
                bytes[34 + bit / 8] ^= 1 << (bit % 8);
                signed = Signed::Broken;
            }
            Mutation::WrongKey => {
                bytes = datagram(&fields, &KEY_B, context);
                signed = Signed::With(KEY_B, context);
            }
            Mutation::WrongContext => {
                let other = if leave { ANNOUNCE } else { LEAVE };
                bytes = datagram(&fields, &KEY_A, other);
                signed = Signed::With(KEY_A, other);
            }
        }
        let want = expected(&groups, bytes.len(), &fields, signed);
        let got = checker.check(&bytes, NOW);
        if let Ok(accepted) = &got {
            prop_assert_eq!(accepted.address, fields.address);
        }
        let got = got.map(|accepted| (accepted.group_index, accepted.kind, accepted.expires_at_us));
        prop_assert_eq!(got, want, "{:?} of {:?}", mutation, original);
    }
}

// ---------------------------------------------------------------------------------------
// Address specs and durations built from parts, each part valid or broken in a known way:
// the oracle says whether the whole must parse, and to what.

#[derive(Debug, Clone)]
enum HostPart {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    /// ":port": every address.
    Empty,
    /// An IPv6 address without brackets.
    V6Unbracketed(Ipv6Addr),
    /// A name or a broken IPv4 literal: never resolved, never an address.
    NotAnAddress(String),
}

#[derive(Debug, Clone)]
enum PortPart {
    Good(u16),
    Broken(String),
    Missing,
}

#[derive(Debug, Clone)]
enum SelectorPart {
    Nothing,
    Name(String),
    Network(ipnet::IpNet),
    Broken(String),
}

fn any_host_part() -> impl Strategy<Value = HostPart> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| HostPart::V4(o.into())),
        any::<[u8; 16]>().prop_map(|o| HostPart::V6(o.into())),
        Just(HostPart::Empty),
        any::<[u8; 16]>().prop_map(|o| HostPart::V6Unbracketed(o.into())),
        prop_oneof![
            "[a-z][a-z0-9.-]{0,15}",
            Just("256.1.1.1".to_string()),
            Just("1.2.3".to_string()),
            Just("1.2.3.4.5".to_string()),
            Just("[::1".to_string()),
            Just("[10.0.0.1]".to_string()),
        ]
        .prop_map(HostPart::NotAnAddress),
    ]
}

fn any_port_part() -> impl Strategy<Value = PortPart> {
    prop_oneof![
        3 => any::<u16>().prop_map(PortPart::Good),
        1 => prop_oneof![
            (65_536u32..10_000_000).prop_map(|n| n.to_string()),
            Just(String::new()),
            Just("-1".to_string()),
            "[a-z]{1,6}",
        ]
        .prop_map(PortPart::Broken),
        1 => Just(PortPart::Missing),
    ]
}

fn any_selector_part() -> impl Strategy<Value = SelectorPart> {
    let network = prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32)
            .prop_map(|(o, len)| { ipnet::IpNet::V4(ipnet::Ipv4Net::new(o.into(), len).unwrap()) }),
        (any::<[u8; 16]>(), 0u8..=128)
            .prop_map(|(o, len)| { ipnet::IpNet::V6(ipnet::Ipv6Net::new(o.into(), len).unwrap()) }),
    ];
    prop_oneof![
        2 => Just(SelectorPart::Nothing),
        1 => "[a-z][a-z0-9]{0,14}".prop_map(SelectorPart::Name),
        1 => network.prop_map(SelectorPart::Network),
        1 => prop_oneof![
            Just(String::new()),
            Just("10.0.0.0/33".to_string()),
            Just("x/8".to_string()),
            Just("/8".to_string()),
            Just("::/129".to_string()),
        ]
        .prop_map(SelectorPart::Broken),
    ]
}

/// The spec's text, and what it must parse to (`None`: it must be refused).
fn address_spec_case(
    host: &HostPart,
    port: &PortPart,
    selector: &SelectorPart,
) -> (String, Option<(SocketAddr, Option<InterfaceSelector>)>) {
    let (host_text, ip) = match host {
        HostPart::V4(v4) => (v4.to_string(), Some(IpAddr::V4(*v4))),
        HostPart::V6(v6) => (format!("[{v6}]"), Some(IpAddr::V6(*v6))),
        HostPart::Empty => (String::new(), Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
        HostPart::V6Unbracketed(v6) => (v6.to_string(), None),
        HostPart::NotAnAddress(text) => (text.clone(), None),
    };
    let (port_text, port) = match port {
        PortPart::Good(port) => (format!(":{port}"), Some(*port)),
        PortPart::Broken(text) => (format!(":{text}"), None),
        PortPart::Missing => (String::new(), None),
    };
    let (selector_text, interface) = match selector {
        SelectorPart::Nothing => (String::new(), Some(None)),
        SelectorPart::Name(name) => {
            (format!("@{name}"), Some(Some(InterfaceSelector::Name(name.clone()))))
        }
        SelectorPart::Network(net) => {
            (format!("@{net}"), Some(Some(InterfaceSelector::Cidr(*net))))
        }
        SelectorPart::Broken(text) => (format!("@{text}"), None),
    };
    let parsed = match (ip, port, interface) {
        (Some(ip), Some(port), Some(interface)) => Some((SocketAddr::new(ip, port), interface)),
        _ => None,
    };
    (format!("{host_text}{port_text}{selector_text}"), parsed)
}

/// Units as Go's `time.ParseDuration` knows them, with their length in nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),
    ("\u{3bc}s", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// One "1.5h" of a duration: the digits before and after an optional dot, and a unit (an
/// index into [`UNITS`], or a unit Go does not know).
#[derive(Debug, Clone)]
struct Component {
    whole: Option<u64>,
    fraction: Option<String>,
    unit: Result<usize, &'static str>,
}

fn any_component() -> impl Strategy<Value = Component> {
    let whole = prop_oneof![
        1 => Just(None),
        6 => (0u64..100_000).prop_map(Some),
        1 => any::<u64>().prop_map(Some),
    ];
    let fraction = prop_oneof![2 => Just(None), 1 => "[0-9]{0,9}".prop_map(Some)];
    let unit = prop_oneof![
        8 => (0..UNITS.len()).prop_map(Ok),
        1 => prop_oneof![Just("d"), Just("sec"), Just("S"), Just("x")].prop_map(Err),
    ];
    (whole, fraction, unit).prop_map(|(whole, fraction, unit)| {
        // A component needs digits or a dot: with neither, its unit would run into the unit
        // before it ("1m" + "s" reads as "1ms").
        let fraction =
            if whole.is_none() && fraction.is_none() { Some(String::new()) } else { fraction };
        Component { whole, fraction, unit }
    })
}

/// The duration text and what it must parse to, per Go: each component is `whole.fraction`
/// times its unit, truncated to whole nanoseconds; the total must fit Go's i64 nanoseconds;
/// rgap refuses negative durations; a bare "0" needs no unit. `None`: must be refused.
fn duration_case(
    sign: &str,
    components: &[Component],
    unit_on_last: bool,
) -> (String, Option<Duration>) {
    let mut text = sign.to_string();
    let mut total: Option<u128> = Some(0);
    for (i, component) in components.iter().enumerate() {
        let last = i + 1 == components.len();
        let whole = component.whole.map(|w| w.to_string()).unwrap_or_default();
        text.push_str(&whole);
        if let Some(fraction) = &component.fraction {
            text.push('.');
            text.push_str(fraction);
        }
        let fraction = component.fraction.clone().unwrap_or_default();
        if whole.is_empty() && fraction.is_empty() {
            total = None;
        }
        if last && !unit_on_last {
            // Only a bare zero may do without a unit.
            let bare_zero = components.len() == 1 && whole == "0" && component.fraction.is_none();
            total = if bare_zero { total } else { None };
            continue;
        }
        let scale = match component.unit {
            Ok(index) => {
                text.push_str(UNITS[index].0);
                UNITS[index].1
            }
            Err(unknown) => {
                text.push_str(unknown);
                total = None;
                continue;
            }
        };
        let value = u128::from(component.whole.unwrap_or(0)) * scale
            + fraction.parse::<u128>().unwrap_or(0) * scale / 10u128.pow(fraction.len() as u32);
        total = total.map(|t| t + value);
    }
    let parsed = total
        .filter(|&nanos| nanos <= i64::MAX as u128)
        .filter(|&nanos| sign != "-" || nanos == 0)
        .map(|nanos| Duration::from_nanos(nanos as u64));
    (text, parsed)
}

proptest! {
    #[test]
    fn address_specs_built_from_parts_parse_exactly_when_every_part_is_valid(
        host in any_host_part(),
        port in any_port_part(),
        selector in any_selector_part(),
    ) {
        let (text, want) = address_spec_case(&host, &port, &selector);
        match (AddrSpec::parse(&text), want) {
            (Ok(spec), Some((addr, interface))) => {
                prop_assert_eq!(spec.addr, addr, "{}", text);
                prop_assert_eq!(&spec.interface, &interface, "{}", text);
                // And it prints back to a spec that parses to the same.
                prop_assert_eq!(AddrSpec::parse(&spec.to_string()).unwrap(), spec);
            }
            (Err(error), None) => {
                // Every refusal quotes the spec as given.
                prop_assert!(error.to_string().contains(&format!("{text:?}")), "{}", error);
            }
            (got, want) => prop_assert!(false, "{:?}: got {:?}, want {:?}", text, got, want),
        }
    }

    #[test]
    fn durations_built_from_parts_parse_to_the_sum_of_their_components(
        sign in prop_oneof![Just(""), Just("+"), Just("-")],
        components in prop::collection::vec(any_component(), 1..4),
        unit_on_last in prop::bool::weighted(0.9),
    ) {
        let (text, want) = duration_case(sign, &components, unit_on_last);
        match (GoDuration::from_str(&text), want) {
            (Ok(got), Some(want)) => prop_assert_eq!(got.get(), want, "{}", text),
            (Err(error), None) => {
                prop_assert!(error.to_string().contains(&format!("{text:?}")), "{}", error);
            }
            (got, want) => prop_assert!(false, "{:?}: got {:?}, want {:?}", text, got, want),
        }
    }

    #[test]
    fn durations_print_as_go_does_and_read_back(nanos in 0u64..=i64::MAX as u64) {
        let duration = Duration::from_nanos(nanos);
        let text = GoDuration(duration).to_string();
        prop_assert_eq!(GoDuration::from_str(&text).unwrap().get(), duration, "{}", text);
    }
}

proptest! {
    #[test]
    fn an_announcements_header_is_laid_out_as_the_design_says(announcement in any_announcement()) {
        let fields = Fields {
            version: 0x0100,
            group: announcement.group,
            timestamp_us: announcement.timestamp_unix_us,
            address: wire(announcement.address),
        };
        prop_assert_eq!(announcement.encode_header(), header(&fields));
        let key = [4u8; 32];
        let signed = encode_signed(&announcement, &psk(key));
        prop_assert_eq!(&signed[..], &datagram(&fields, &key, ANNOUNCE)[..]);
    }
}
