//! Property tests: the parsers that face the network or the operator never panic on any
//! input, and what is signed decodes back to itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;
use rgap_core::addrspec::AddrSpec;
use rgap_core::config::{Config, GroupConfig};
use rgap_core::duration::GoDuration;
use rgap_core::listener::{Checker, DropReason};
use rgap_core::protocol::{encode_signed, Announcement, RawAnnouncement, Verifier};
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
