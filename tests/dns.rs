//! End-to-end tests of the `dns` output: the real `rgap listener` with `kind: dns`, real
//! signed announcements, and a real DNS client (hickory's, from `hickory-net`) asking over
//! UDP and TCP. Every wait polls with a deadline; nothing sleeps to synchronise.

mod common;

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_net::client::Client;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::{DnsHandle as _, FirstAnswer as _};
use hickory_proto::op::{
    DnsRequest, DnsRequestOptions, DnsResponse, Edns, Message, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use common::{
    announcement, config, eventually, free_port, free_udp_port, listener_start_error, send_to,
    spawn_listener, RunningListener, PSK,
};

const GROUP: u64 = 1000;
/// The mapped name of group 1000, with fallbacks 192.0.2.1, 192.0.2.2 and 2001:db8::1.
const NAME: &str = "worker.example.com.";
const EXPIRE_SECONDS: u32 = 30;
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A running listener with one `dns` output.
struct Dns {
    listener: RunningListener,
    /// Where announcements go.
    announce_port: u16,
    /// The DNS server.
    server: SocketAddr,
}

/// How a query travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// UDP with EDNS (the client advertises 1232 bytes).
    Udp,
    /// UDP without EDNS: responses are limited to 512 bytes.
    UdpClassic,
    Tcp,
}

/// An `eventlog` output (its join lines tell when the table has a member) and a `dns`
/// output mapping [`NAME`] to group 1000, with `mappings_extra` (indented for the mappings
/// block) and `spec_extra` (further spec keys).
fn dns_output(dns_port: u16, mappings_extra: &str, spec_extra: &str) -> String {
    format!(
        "- kind: eventlog\n- kind: dns\n  spec:\n    bind_address: 127.0.0.1:{dns_port}\n    \
         mappings:\n      {NAME}:\n        group: {GROUP}\n        fallback_addresses: \
         [192.0.2.1, 192.0.2.2, '2001:db8::1']\n{mappings_extra}{spec_extra}"
    )
}

/// Starts a listener with group 1000 (`expire: 30s`, `readiness_delay` as given) and a dns
/// output with `spec_extra`.
fn start_dns(readiness_delay: &str, spec_extra: &str) -> Dns {
    start_dns_with(
        &format!("  expire: {EXPIRE_SECONDS}s\n  readiness_delay: {readiness_delay}\n"),
        "",
        spec_extra,
    )
}

fn start_dns_with(group_extra: &str, mappings_extra: &str, spec_extra: &str) -> Dns {
    let announce_port = free_udp_port();
    let dns_port = free_port();
    let outputs = dns_output(dns_port, mappings_extra, spec_extra);
    let listener = spawn_listener(&config(announce_port, group_extra, &outputs));
    listener.wait_for_log("listener started");
    Dns { listener, announce_port, server: ([127, 0, 0, 1], dns_port).into() }
}

impl Dns {
    fn announce(&self, ip: &str) {
        send_to(([127, 0, 0, 1], self.announce_port).into(), &announcement(GROUP, ip, PSK));
    }

    fn query(&self, name: &str, record_type: RecordType, via: Via) -> DnsResponse {
        query(self.server, name, record_type, via)
    }

    /// Polls until `condition` holds for the answer to `name`/`record_type`; returns it.
    fn wait_for(
        &self,
        name: &str,
        record_type: RecordType,
        via: Via,
        what: &str,
        condition: impl Fn(&DnsResponse) -> bool,
    ) -> DnsResponse {
        wait_for(self.server, name, record_type, via, what, condition)
    }
}

/// Asks `server` until `condition` holds for the answer to `name`/`record_type`; returns
/// that answer. Panics with the last answer after `WAIT`.
fn wait_for(
    server: SocketAddr,
    name: &str,
    record_type: RecordType,
    via: Via,
    what: &str,
    condition: impl Fn(&DnsResponse) -> bool,
) -> DnsResponse {
    let mut last = None;
    let held = eventually(|| {
        let response = query(server, name, record_type, via);
        let done = condition(&response);
        last = Some(response);
        done
    });
    let last = last.expect("at least one query");
    assert!(held, "timed out waiting for {what}; last answer: {:?}", *last);
    last
}

/// Sends `request` to `server` over `via` with hickory's client; panics without an answer.
fn exchange(server: SocketAddr, via: Via, request: DnsRequest) -> DnsResponse {
    try_exchange(server, via, request, QUERY_TIMEOUT).expect("a DNS response")
}

/// As [`exchange`], giving up after `timeout`.
fn try_exchange(
    server: SocketAddr,
    via: Via,
    request: DnsRequest,
    timeout: Duration,
) -> Result<DnsResponse, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let provider = TokioRuntimeProvider::default();
        let client = match via {
            Via::Udp | Via::UdpClassic => {
                let stream =
                    UdpClientStream::builder(server, provider).with_timeout(Some(timeout)).build();
                let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
                tokio::spawn(background);
                client
            }
            Via::Tcp => {
                let (connect, handle) = TcpClientStream::new(server, None, Some(timeout), provider);
                let stream = connect.await.map_err(|e| format!("TCP connection: {e}"))?;
                let (client, background) = Client::<TokioRuntimeProvider>::new(stream, handle);
                tokio::spawn(background);
                client
            }
        };
        client.send(request).first_answer().await.map_err(|e| e.to_string())
    })
}

fn options(via: Via) -> DnsRequestOptions {
    let mut options = DnsRequestOptions::default();
    options.use_edns = via != Via::UdpClassic;
    options.recursion_desired = false;
    options
}

fn query(server: SocketAddr, name: &str, record_type: RecordType, via: Via) -> DnsResponse {
    let query = Query::query(Name::from_ascii(name).unwrap(), record_type);
    exchange(server, via, DnsRequest::from_query(query, options(via)))
}

/// The addresses in the answer section.
fn addresses(response: &DnsResponse) -> BTreeSet<IpAddr> {
    response
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

fn ttls(response: &DnsResponse) -> Vec<u32> {
    response.answers.iter().map(|record| record.ttl).collect()
}

fn code(response: &DnsResponse) -> ResponseCode {
    response.metadata.response_code
}

// ---------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------

#[test]
fn members_answer_as_a_and_aaaa_with_their_remaining_ttl() {
    let dns = start_dns("0s", "");
    for ip in ["10.0.0.1", "10.0.0.2", "2001:db8:1::1", "2001:db8:1::2"] {
        dns.announce(ip);
    }
    for via in [Via::Udp, Via::UdpClassic, Via::Tcp] {
        let a = dns.wait_for(NAME, RecordType::A, via, "both IPv4 members", |r| {
            addresses(r) == ips(&["10.0.0.1", "10.0.0.2"])
        });
        assert_eq!(code(&a), ResponseCode::NoError);
        assert!(a.metadata.authoritative, "AA must be set");
        assert!(!a.metadata.truncation);
        assert_eq!(a.answers.len(), 2);
        assert!(a.answers.iter().all(|record| record.record_type() == RecordType::A));
        for ttl in ttls(&a) {
            assert!((1..=EXPIRE_SECONDS).contains(&ttl), "TTL {ttl} outside 1..={EXPIRE_SECONDS}");
        }

        let aaaa = dns.wait_for(NAME, RecordType::AAAA, via, "both IPv6 members", |r| {
            addresses(r) == ips(&["2001:db8:1::1", "2001:db8:1::2"])
        });
        assert!(aaaa.answers.iter().all(|record| record.record_type() == RecordType::AAAA));
        for ttl in ttls(&aaaa) {
            assert!((1..=EXPIRE_SECONDS).contains(&ttl), "TTL {ttl} outside 1..={EXPIRE_SECONDS}");
        }
    }
    // SIGTERM stops the server thread with the rest, and rgap exits 0.
    let server = dns.server;
    assert!(dns.listener.terminate().success());
    assert!(UdpSocket::bind(server).is_ok(), "the DNS port is released");
}

#[test]
fn ttl_counts_down_to_the_members_expiry() {
    // Announced 10 s in the past: at most 20 s are left of the 30 s, however long the
    // answer takes to come.
    let dns = start_dns("0s", "");
    let stamp = rgap_core::protocol::unix_micros(std::time::SystemTime::now()) - 10_000_000;
    send_to(
        ([127, 0, 0, 1], dns.announce_port).into(),
        &common::announcement_at(GROUP, "10.0.0.9", PSK, stamp),
    );
    let member = ips(&["10.0.0.9"]);
    let a = dns.wait_for(NAME, RecordType::A, Via::Udp, "the member", |r| addresses(r) == member);
    let first = ttls(&a)[0];
    assert!((1..=20).contains(&first), "TTL {first}: the member has at most 20 s left");
    // And it counts down: a later answer gives less (polled, whatever the machine's load).
    dns.wait_for(NAME, RecordType::A, Via::Udp, "a smaller TTL", |r| {
        addresses(r) == member && ttls(r)[0] < first
    });
}

#[test]
fn empty_group_answers_fallbacks_with_ttl_0_until_a_member_joins() {
    let dns = start_dns("0s", "");
    for via in [Via::Udp, Via::Tcp] {
        let a = dns.wait_for(NAME, RecordType::A, via, "the IPv4 fallbacks", |r| {
            code(r) == ResponseCode::NoError && !r.answers.is_empty()
        });
        assert_eq!(addresses(&a), ips(&["192.0.2.1", "192.0.2.2"]));
        assert_eq!(ttls(&a), [0, 0]);
        let aaaa = dns.query(NAME, RecordType::AAAA, via);
        assert_eq!(addresses(&aaaa), ips(&["2001:db8::1"]));
        assert_eq!(ttls(&aaaa), [0]);
    }

    // A member replaces the fallbacks as soon as it is announced.
    dns.announce("10.0.0.7");
    let a = dns.wait_for(NAME, RecordType::A, Via::Udp, "the member", |r| {
        addresses(r) == ips(&["10.0.0.7"])
    });
    assert!(ttls(&a)[0] >= 1);
    // The group is no longer empty: an IPv4-only group has no AAAA (no fallback either).
    let aaaa = dns.query(NAME, RecordType::AAAA, Via::Udp);
    assert_eq!(code(&aaaa), ResponseCode::NoError);
    assert!(aaaa.answers.is_empty(), "NODATA expected, got {:?}", aaaa.answers);
}

#[test]
fn a_member_that_expires_gives_way_to_the_fallbacks() {
    let dns = start_dns_with("  expire: 2s\n  readiness_delay: 0s\n", "", "");
    dns.announce("10.0.0.5");
    dns.wait_for(NAME, RecordType::A, Via::Udp, "the member", |r| {
        addresses(r) == ips(&["10.0.0.5"])
    });
    let a = dns.wait_for(NAME, RecordType::A, Via::Udp, "the fallbacks after expiry", |r| {
        addresses(r) == ips(&["192.0.2.1", "192.0.2.2"])
    });
    assert_eq!(ttls(&a), [0, 0]);
}

#[test]
fn names_match_in_any_case_with_or_without_the_trailing_dot() {
    // Configured in mixed case and without the trailing dot, asked in other cases.
    let dns = start_dns_with(
        "  expire: 30s\n  readiness_delay: 0s\n",
        &format!("      Api.Example.NET:\n        group: {GROUP}\n"),
        "",
    );
    dns.announce("10.0.0.3");
    for name in ["WoRkEr.ExAmPlE.cOm.", "WORKER.EXAMPLE.COM", "api.example.net.", "API.EXAMPLE.NET"]
    {
        for via in [Via::Udp, Via::Tcp] {
            let a = dns
                .wait_for(name, RecordType::A, via, name, |r| addresses(r) == ips(&["10.0.0.3"]));
            // The question and the answers keep the case of the query.
            assert_eq!(
                a.answers[0].name.to_ascii().trim_end_matches('.'),
                name.trim_end_matches('.')
            );
        }
    }
}

#[test]
fn many_records_of_a_large_group_are_shuffled() {
    let dns = start_dns("0s", "");
    let members: Vec<String> = (1..=8).map(|i| format!("10.0.1.{i}")).collect();
    for ip in &members {
        dns.announce(ip);
    }
    let all: BTreeSet<IpAddr> = members.iter().map(|ip| ip.parse().unwrap()).collect();
    let first = dns.wait_for(NAME, RecordType::A, Via::Udp, "8 members", |r| addresses(r) == all);
    let order = |r: &DnsResponse| -> Vec<String> {
        r.answers.iter().map(|record| record.data.to_string()).collect()
    };
    // 8! orders: the same order 30 times over would take a broken shuffle.
    let first_order = order(&first);
    let reordered =
        (0..30).any(|_| order(&dns.query(NAME, RecordType::A, Via::Udp)) != first_order);
    assert!(reordered, "30 answers all in the order {first_order:?}");
}

// ---------------------------------------------------------------------------------------
// Response codes and flags
// ---------------------------------------------------------------------------------------

#[test]
fn a_group_that_is_not_ready_answers_servfail() {
    let dns = start_dns("1h", "");
    dns.announce("10.0.0.1");
    dns.listener.wait_for_log("host 10.0.0.1 has joined group 1000");
    for via in [Via::Udp, Via::Tcp] {
        for record_type in [RecordType::A, RecordType::AAAA] {
            let response = dns.query(NAME, record_type, via);
            assert_eq!(code(&response), ResponseCode::ServFail, "{record_type} over {via:?}");
            assert!(response.answers.is_empty());
        }
    }
    // Names that are not mapped are NXDOMAIN all the same.
    assert_eq!(
        code(&dns.query("nope.example.com.", RecordType::A, Via::Udp)),
        ResponseCode::NXDomain
    );
}

#[test]
fn a_name_mapped_to_a_group_the_listener_lacks_warns_and_answers_servfail() {
    let dns = start_dns_with(
        &format!("  expire: {EXPIRE_SECONDS}s\n  readiness_delay: 0s\n"),
        "      orphan.example.com:\n        group: 4242\n",
        "",
    );
    dns.listener.wait_for_log(
        "spec.mappings.orphan.example.com: group 4242 is not one of the listener's groups",
    );
    let response = dns.query("orphan.example.com.", RecordType::A, Via::Udp);
    assert_eq!(code(&response), ResponseCode::ServFail);
}

#[test]
fn unmapped_names_are_nxdomain() {
    let dns = start_dns("0s", "");
    for name in ["other.example.com.", "x.worker.example.com.", "example.com.", "."] {
        for via in [Via::Udp, Via::Tcp] {
            let response = dns.query(name, RecordType::A, via);
            assert_eq!(code(&response), ResponseCode::NXDomain, "{name} over {via:?}");
            assert!(response.answers.is_empty());
            assert!(response.metadata.authoritative, "AA on NXDOMAIN");
        }
    }
}

#[test]
fn other_types_of_a_mapped_name_are_nodata() {
    let dns = start_dns("0s", "");
    dns.announce("10.0.0.1");
    dns.wait_for(NAME, RecordType::A, Via::Udp, "the member", |r| {
        addresses(r) == ips(&["10.0.0.1"])
    });
    for record_type in
        [RecordType::MX, RecordType::TXT, RecordType::NS, RecordType::SOA, RecordType::CNAME]
    {
        let response = dns.query(NAME, record_type, Via::Udp);
        assert_eq!(code(&response), ResponseCode::NoError, "{record_type}");
        assert!(response.answers.is_empty(), "{record_type}: {:?}", response.answers);
        assert!(response.metadata.authoritative);
    }
    // No IPv6 member in a group that has members: NODATA, not the IPv6 fallback.
    let aaaa = dns.query(NAME, RecordType::AAAA, Via::Tcp);
    assert_eq!(code(&aaaa), ResponseCode::NoError);
    assert!(aaaa.answers.is_empty());
}

#[test]
fn non_authoritative_leaves_aa_clear() {
    let dns = start_dns("0s", "    non_authoritative: true\n");
    let a = dns.wait_for(NAME, RecordType::A, Via::Udp, "the fallbacks", |r| !r.answers.is_empty());
    assert!(!a.metadata.authoritative);
    let nx = dns.query("other.example.com.", RecordType::A, Via::Tcp);
    assert_eq!(code(&nx), ResponseCode::NXDomain);
    assert!(!nx.metadata.authoritative);
}

#[test]
fn other_opcodes_and_classes_get_proper_errors() {
    let dns = start_dns("0s", "");
    // NOTIFY: not implemented.
    let mut notify = Message::query();
    notify.metadata.op_code = OpCode::Notify;
    notify.add_query(Query::query(Name::from_ascii(NAME).unwrap(), RecordType::SOA));
    let response = exchange(dns.server, Via::Udp, DnsRequest::new(notify, options(Via::Udp)));
    assert_eq!(code(&response), ResponseCode::NotImp);

    // Class CH (e.g. version.bind) and class ANY: refused.
    for class in [DNSClass::CH, DNSClass::ANY] {
        let mut query = Query::query(Name::from_ascii(NAME).unwrap(), RecordType::A);
        query.set_query_class(class);
        let response =
            exchange(dns.server, Via::Udp, DnsRequest::from_query(query, options(Via::Udp)));
        assert_eq!(code(&response), ResponseCode::Refused, "{class}");
        assert!(response.answers.is_empty());
    }
}

#[test]
fn edns_queries_get_an_edns_reply() {
    let dns = start_dns("0s", "");
    let with =
        dns.wait_for(NAME, RecordType::A, Via::Udp, "the fallbacks", |r| !r.answers.is_empty());
    let edns = with.edns.as_ref().expect("an OPT record in the reply to an EDNS query");
    assert_eq!(edns.version(), 0);
    assert_eq!(edns.max_payload(), 1232);
    let without = dns.query(NAME, RecordType::A, Via::UdpClassic);
    assert!(without.edns.is_none(), "no OPT record in the reply to a query without one");

    // An EDNS version we do not speak: BADVERS, with our OPT record saying version 0.
    let mut message = Message::query();
    message.add_query(Query::query(Name::from_ascii(NAME).unwrap(), RecordType::A));
    let mut edns = Edns::new();
    edns.set_version(1);
    edns.set_max_payload(1232);
    message.set_edns(edns);
    let mut options = options(Via::Udp);
    options.use_edns = false; // the message carries its own OPT record
    let response = exchange(dns.server, Via::Udp, DnsRequest::new(message, options));
    // 16: hickory reads it back under its other name, BADSIG.
    assert_eq!(u16::from(code(&response)), u16::from(ResponseCode::BADVERS));
    assert_eq!(response.edns.as_ref().map(Edns::version), Some(0));
}

// ---------------------------------------------------------------------------------------
// Size: truncation and compression
// ---------------------------------------------------------------------------------------

#[test]
fn a_300_member_group_truncates_over_udp_and_comes_whole_over_tcp() {
    let dns = start_dns("0s", "");
    let members: Vec<String> =
        (0..300).map(|i| format!("10.1.{}.{}", i / 250, i % 250 + 1)).collect();
    for ip in &members {
        dns.announce(ip);
    }
    let all: BTreeSet<IpAddr> = members.iter().map(|ip| ip.parse().unwrap()).collect();
    let tcp = dns.wait_for(NAME, RecordType::A, Via::Tcp, "all 300 members over TCP", |r| {
        addresses(r) == all
    });
    assert_eq!(tcp.answers.len(), 300);
    assert!(!tcp.metadata.truncation);

    for (via, limit) in [(Via::Udp, 1232), (Via::UdpClassic, 512)] {
        let udp = dns.query(NAME, RecordType::A, via);
        assert_eq!(code(&udp), ResponseCode::NoError);
        assert!(udp.metadata.truncation, "TC must be set over {via:?}");
        assert!(udp.as_buffer().len() <= limit, "{} bytes over {via:?}", udp.as_buffer().len());
        assert!(udp.answers.len() < 300);
        assert!(addresses(&udp).is_subset(&all));
        assert_eq!(udp.edns.is_some(), via == Via::Udp, "OPT record kept when truncating");
    }
}

#[test]
fn compress_controls_name_compression() {
    // Two dns outputs in one listener: the default (no compression, as in the Go rgap) and
    // `compress: true`.
    let announce_port = free_udp_port();
    let (plain_port, compressed_port) = (free_port(), free_port());
    let outputs = format!(
        "{}{}",
        dns_output(plain_port, "", ""),
        dns_output(compressed_port, "", "    compress: true\n")
    );
    let group = format!("  expire: {EXPIRE_SECONDS}s\n  readiness_delay: 0s\n");
    let listener = spawn_listener(&config(announce_port, &group, &outputs));
    listener.wait_for_log("listener started");
    let fallbacks = |r: &DnsResponse| addresses(r) == ips(&["192.0.2.1", "192.0.2.2"]);
    let plain_server = ([127, 0, 0, 1], plain_port).into();
    let plain = wait_for(plain_server, NAME, RecordType::A, Via::Udp, "fallbacks", fallbacks);
    let compressed_server = ([127, 0, 0, 1], compressed_port).into();
    let compressed =
        wait_for(compressed_server, NAME, RecordType::A, Via::Udp, "fallbacks", fallbacks);
    assert_eq!(addresses(&plain), addresses(&compressed));
    assert_eq!(addresses(&plain).len(), 2);

    // A pointer to the question name (offset 12) is 2 bytes; the name in full is 20.
    let pointer = [0xC0u8, 0x0C];
    let has_pointer = |r: &DnsResponse| r.as_buffer().windows(2).any(|w| w == pointer);
    assert!(has_pointer(&compressed), "compress: true writes answer names as pointers");
    assert!(!has_pointer(&plain), "compress: false writes every name in full");
    let name_length = NAME.len() + 1;
    assert_eq!(plain.as_buffer().len() - compressed.as_buffer().len(), 2 * (name_length - 2));
}

// ---------------------------------------------------------------------------------------
// Large groups and hostile load: answers capped, ANY minimal, rate limiting
// ---------------------------------------------------------------------------------------

impl Dns {
    /// Announces every address in `ips` until all are in the TCP answer for `record_type`
    /// (a burst may overflow the listener's socket buffer: missing ones are sent again).
    fn announce_all(&self, ips: &[String], record_type: RecordType) -> DnsResponse {
        let all: BTreeSet<IpAddr> = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        let mut last = None;
        let held = eventually(|| {
            let seen = last.as_ref().map(addresses).unwrap_or_default();
            for ip in ips.iter().filter(|ip| !seen.contains(&ip.parse::<IpAddr>().unwrap())) {
                self.announce(ip);
            }
            let response = self.query(NAME, record_type, Via::Tcp);
            let done = addresses(&response) == all;
            last = Some(response);
            done
        });
        let last = last.expect("at least one query");
        assert!(held, "not every member arrived: {} of {}", addresses(&last).len(), ips.len());
        last
    }
}

/// `count` distinct IPv4 addresses in 10.2.0.0/16.
fn ipv4_members(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("10.2.{}.{}", i / 250, i % 250 + 1)).collect()
}

#[test]
fn udp_answers_of_a_large_group_are_capped_and_spread_while_tcp_returns_all() {
    let dns = start_dns("0s", "");
    let members = ipv4_members(1500);
    let tcp = dns.announce_all(&members, RecordType::A);
    assert_eq!(tcp.answers.len(), 1500, "TCP carries every member");
    assert!(!tcp.metadata.truncation);

    let record = NAME.len() + 1 + 10 + 4;
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        for (via, limit) in [(Via::Udp, 1232), (Via::UdpClassic, 512)] {
            let udp = dns.query(NAME, RecordType::A, via);
            let length = udp.as_buffer().len();
            assert!(udp.metadata.truncation, "TC over {via:?}: resolvers retry over TCP");
            assert!(length <= limit && length + record > limit, "{length} bytes over {via:?}");
            assert_eq!(addresses(&udp).len(), udp.answers.len(), "no duplicates");
            seen.extend(addresses(&udp));
        }
    }
    // Each answer holds about 35 of the 1500; different answers hold different members.
    let one_answer = (1232 - 12 - (NAME.len() + 5) - 11) / record;
    assert!(seen.len() > 4 * one_answer, "20 UDP answers held only {} members", seen.len());
    assert!(seen.is_subset(&tcp.answers.iter().map(|r| r.data.ip_addr().unwrap()).collect()));
}

#[test]
fn max_answers_caps_every_answer_without_truncation() {
    let dns = start_dns(
        "0s",
        "    max_answers: 3
",
    );
    let members = ipv4_members(10);
    for ip in &members {
        dns.announce(ip);
    }
    dns.listener.wait_for_log_count("has joined group 1000", 10);
    let all: BTreeSet<IpAddr> = members.iter().map(|ip| ip.parse().unwrap()).collect();
    // The eventlog's lines come from its own snapshot: the dns output may publish its own a
    // moment later, and until then it answers with the fallbacks.
    dns.wait_for(NAME, RecordType::A, Via::Udp, "members, not the fallbacks", |r| {
        r.answers.len() == 3 && addresses(r).is_subset(&all)
    });
    let mut seen = BTreeSet::new();
    for via in [Via::Udp, Via::UdpClassic, Via::Tcp] {
        for _ in 0..40 {
            let a = dns.query(NAME, RecordType::A, via);
            assert_eq!(a.answers.len(), 3, "over {via:?}: {:?}", a.answers);
            assert!(!a.metadata.truncation, "a complete answer by choice, not TC");
            assert!(addresses(&a).is_subset(&all));
            seen.extend(addresses(&a));
        }
    }
    assert_eq!(seen, all, "120 answers of 3 spread over all 10 members");
    // The group has members but none of IPv6: still NODATA.
    let ipv6 = dns.query(NAME, RecordType::AAAA, Via::Udp);
    assert!(ipv6.answers.is_empty(), "no IPv6 member: NODATA");
}

#[test]
fn any_over_udp_gets_one_rfc8482_record_and_tcp_gets_the_addresses() {
    let dns = start_dns("0s", "");
    let mut members = ipv4_members(40);
    members.extend((1..=20).map(|i| format!("2001:db8:2::{i}")));
    let tcp = dns.announce_all(&members, RecordType::ANY);
    assert_eq!(tcp.answers.len(), 60, "ANY over TCP: every A and AAAA");

    for via in [Via::Udp, Via::UdpClassic] {
        let any = dns.query(NAME, RecordType::ANY, via);
        assert_eq!(code(&any), ResponseCode::NoError);
        assert!(any.metadata.authoritative);
        assert!(!any.metadata.truncation);
        assert_eq!(any.answers.len(), 1, "over {via:?}: {:?}", any.answers);
        let record = &any.answers[0];
        assert_eq!(record.record_type(), RecordType::HINFO);
        let RData::HINFO(hinfo) = &record.data else { panic!("{record}") };
        assert_eq!(&*hinfo.cpu, b"RFC8482");
        assert!(hinfo.os.is_empty());
        // No amplification: the answer is about the size of the question.
        assert!(any.as_buffer().len() < 100, "{} bytes", any.as_buffer().len());
    }
    // Unmapped names and unready groups answer as before.
    let nx = dns.query("other.example.com.", RecordType::ANY, Via::Udp);
    assert_eq!(code(&nx), ResponseCode::NXDomain);
}

/// What came back for a burst of queries.
#[derive(Debug, Default)]
struct Tally {
    full: usize,
    slipped: usize,
}

/// Sends `count` A queries for [`NAME`] from one socket as fast as it goes, in chunks
/// (so as not to overflow socket buffers), reading what comes back until it is quiet.
fn flood(server: SocketAddr, count: usize) -> (Tally, Duration) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut message = Message::query();
    message.add_query(Query::query(Name::from_ascii(NAME).unwrap(), RecordType::A));
    let query = message.to_vec().unwrap();
    let mut tally = Tally::default();
    let mut buffer = [0u8; 2048];
    let mut read = |socket: &UdpSocket, tally: &mut Tally| {
        while let Ok(length) = socket.recv(&mut buffer) {
            let reply = Message::from_vec(&buffer[..length]).expect("a well-formed response");
            if reply.metadata.truncation {
                assert!(reply.answers.is_empty(), "a slip carries no records");
                tally.slipped += 1;
            } else {
                assert_eq!(reply.answers.len(), 1);
                tally.full += 1;
            }
        }
    };
    let started = std::time::Instant::now();
    socket.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    for _ in 0..count / 50 {
        for _ in 0..50 {
            socket.send_to(&query, server).unwrap();
        }
        read(&socket, &mut tally);
    }
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    read(&socket, &mut tally);
    (tally, started.elapsed())
}

#[test]
fn rate_limiting_slips_truncated_answers_to_a_flooding_client_then_forgives_it() {
    let rate = 20;
    let dns = start_dns(
        "0s",
        &format!(
            "    rate_limit: {{responses_per_second: {rate}, slip: 2}}
"
        ),
    );
    dns.announce("10.0.0.1");
    let member = ips(&["10.0.0.1"]);
    // TCP is not limited, and does not count against the client's UDP budget.
    dns.wait_for(NAME, RecordType::A, Via::Tcp, "the member", |r| addresses(r) == member);

    let sent = 2000;
    let (tally, elapsed) = flood(dns.server, sent);
    eprintln!("{sent} queries: {tally:?} in {elapsed:?}");
    // At most one second's worth at once plus the rate over the time it took.
    let allowed = rate * (1 + elapsed.as_secs() as usize + 1);
    assert!(
        (1..=allowed).contains(&tally.full),
        "{} full answers in {elapsed:?} at {rate} per second",
        tally.full
    );
    // Of the rest, every second one comes back truncated and the others not at all.
    let limited = sent - tally.full;
    assert!(tally.slipped >= 10, "{tally:?}");
    assert!(tally.slipped <= limited / 2 + 1, "{tally:?}: more slips than every second one");

    // Over the limit, the client still gets its answer over TCP, as a slip tells it to.
    let tcp = dns.query(NAME, RecordType::A, Via::Tcp);
    assert_eq!(addresses(&tcp), member);

    // Having stopped, the client is answered normally again over UDP.
    let mut last = None;
    let answered = eventually(|| {
        let query = Query::query(Name::from_ascii(NAME).unwrap(), RecordType::A);
        let request = DnsRequest::from_query(query, options(Via::Udp));
        let response = try_exchange(dns.server, Via::Udp, request, Duration::from_millis(500));
        let done =
            response.as_ref().is_ok_and(|r| !r.metadata.truncation && addresses(r) == member);
        last = Some(response.map(|r| r.answers.len()));
        done
    });
    assert!(answered, "no normal answer after the flood; last: {last:?}");
    assert!(!dns.listener.log().iter().any(|line| line.contains("panicked")));
}

// ---------------------------------------------------------------------------------------
// Robustness
// ---------------------------------------------------------------------------------------

#[test]
fn junk_does_not_stop_the_server() {
    let dns = start_dns("0s", "");
    dns.announce("10.0.0.1");
    dns.wait_for(NAME, RecordType::A, Via::Udp, "the member", |r| {
        addresses(r) == ips(&["10.0.0.1"])
    });

    // Datagrams: empty, too short for a header, a header promising a question that is not
    // there, a response (never answered), a name with a pointer loop, random bytes, and
    // an oversized datagram. Every one of 12 bytes or more carries an id of its own (its
    // index), so that each reply tells which datagram it answers.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x12],
        vec![0; 11],
        vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0],
        vec![0xAB, 0xCD, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0],
        vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1],
        vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 9, 3, b'f', b'o', b'o', 0, 0, 1, 0, 1],
        vec![0x5A; 9000],
        // A response carrying a question, and one with a record: never answered either.
        vec![0xAB, 0xCD, 0x84, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1],
        vec![0xAB, 0xCD, 0x80, 0x00, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 9, 0, 0],
    ];
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for length in [12, 17, 40, 300, 1500, 12, 40] {
        junk.push(
            (0..length)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect(),
        );
    }
    for (index, datagram) in junk.iter_mut().enumerate().filter(|(_, d)| d.len() >= 12) {
        datagram[..2].copy_from_slice(&(index as u16).to_be_bytes());
    }
    // QR is the top bit of the third byte: a datagram with it set is a response.
    let is_response = |datagram: &[u8]| datagram.len() >= 12 && datagram[2] & 0x80 != 0;
    assert!(
        junk.iter().filter(|datagram| is_response(datagram)).count() >= 4,
        "the random datagrams should include responses too; pick another seed"
    );
    // Every reply that comes back, to any datagram sent, must answer a query: a datagram
    // of at least a header with QR clear, never a response (no reflection) or a runt.
    let mut buf = [0u8; 2048];
    let mut replies = 0;
    let mut check_replies = |socket: &UdpSocket, quiet: Duration| {
        socket.set_read_timeout(Some(quiet)).unwrap();
        while let Ok(length) = socket.recv(&mut buf) {
            replies += 1;
            let reply = &buf[..length];
            assert!(length >= 12, "a reply of {length} bytes");
            assert!(reply[2] & 0x80 != 0, "a reply without QR: {reply:?}");
            let index = usize::from(u16::from_be_bytes([reply[0], reply[1]]));
            let asked = junk.get(index).unwrap_or_else(|| panic!("a reply with id {index}"));
            assert!(asked.len() >= 12, "datagram {index} ({} bytes) was answered", asked.len());
            assert!(!is_response(asked), "datagram {index}, a response, was answered: {asked:?}");
        }
    };
    for _ in 0..50 {
        for datagram in &junk {
            let _ = socket.send_to(datagram, dns.server);
        }
        check_replies(&socket, Duration::from_millis(1));
    }
    check_replies(&socket, Duration::from_millis(500));
    // The queries among the junk were answered (so the check above had replies to check).
    assert!(replies >= 50, "only {replies} replies to 50 rounds of junk");
    socket.send_to(&[0xAB, 0xCD, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0], dns.server).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert!(socket.recv(&mut buf).is_err(), "a response datagram was answered");

    // TCP: a connection that sends half a message and stays, one that sends a length and
    // closes, one that sends garbage.
    let mut half = TcpStream::connect(dns.server).unwrap();
    half.write_all(&[0, 40, 0xAB, 0xCD]).unwrap();
    let mut cut = TcpStream::connect(dns.server).unwrap();
    cut.write_all(&[0, 200]).unwrap();
    drop(cut);
    let mut garbage = TcpStream::connect(dns.server).unwrap();
    garbage.write_all(&[0, 3, 1, 2, 3, 0xFF, 0xFF]).unwrap();
    let _ = garbage.read(&mut buf);

    // Every kind of query is still answered, over both transports.
    for via in [Via::Udp, Via::UdpClassic, Via::Tcp] {
        let a = dns.query(NAME, RecordType::A, via);
        assert_eq!(addresses(&a), ips(&["10.0.0.1"]), "over {via:?}");
    }
    drop(half);
    assert!(!dns.listener.log().iter().any(|line| line.contains("panicked")));
}

#[test]
fn floods_and_idle_connections_do_not_lock_out_other_queries() {
    let dns = start_dns("0s", "");
    dns.announce("10.0.0.1");
    let member = ips(&["10.0.0.1"]);
    dns.wait_for(NAME, RecordType::A, Via::Udp, "the member", |r| addresses(r) == member);

    // More idle TCP connections than the server keeps (its MAX_TCP_CONNECTIONS is 512):
    // the oldest make room for new ones.
    let idle: Vec<TcpStream> =
        (0..540).map(|_| TcpStream::connect(dns.server).expect("connect")).collect();

    // A UDP flood of queries for unmapped names and of garbage, while we ask.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (stop, server) = (stop.clone(), dns.server);
        std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut unmapped = Message::query();
            unmapped
                .add_query(Query::query(Name::from_ascii("x.example.").unwrap(), RecordType::A));
            let unmapped = unmapped.to_vec().unwrap();
            let garbage = [0xEEu8; 48];
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && sent < 5_000_000 {
                let datagram: &[u8] = [&unmapped[..], &garbage[..]][(sent & 1) as usize];
                if socket.send_to(datagram, server).is_ok() {
                    sent += 1;
                }
            }
            sent
        })
    };
    // Asked as a resolver would under load: a datagram may be lost in the flood, so each
    // query gets a few attempts of 1 s.
    for via in [Via::Udp, Via::Tcp, Via::UdpClassic, Via::Tcp, Via::Udp] {
        let mut failures = Vec::new();
        let answer = (0..5).find_map(|_| {
            let query = Query::query(Name::from_ascii(NAME).unwrap(), RecordType::A);
            let request = DnsRequest::from_query(query, options(via));
            try_exchange(dns.server, via, request, Duration::from_secs(1))
                .map_err(|error| failures.push(error))
                .ok()
        });
        let answer = answer.unwrap_or_else(|| panic!("no answer over {via:?}: {failures:?}"));
        assert_eq!(addresses(&answer), member, "over {via:?}");
    }
    stop.store(true, Ordering::Relaxed);
    assert!(flood.join().unwrap() > 0);
    drop(idle);
}

/// Bursts from several clients at once: the server reads them in batches (and, under load,
/// pauses between reads to take more at once), so this checks that every query is answered
/// once, to the socket that asked, with its own id, and none waits for more to arrive.
#[test]
fn bursts_from_many_clients_are_each_answered_to_their_sender() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: u16 = 150;
    let dns = start_dns("0s", "");
    dns.announce("10.0.0.1");
    let member = ips(&["10.0.0.1"]);
    dns.wait_for(NAME, RecordType::A, Via::Udp, "the member", |r| addresses(r) == member);

    let clients: Vec<UdpSocket> =
        (0..CLIENTS).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    // Interleaved, so that each read of the server holds several clients' queries. Ids
    // differ between clients too, so a response sent to the wrong one shows.
    for id in 0..PER_CLIENT {
        for (number, client) in clients.iter().enumerate() {
            let id = number as u16 * 1000 + id;
            client.send_to(&query_bytes(id, NAME, RecordType::A), dns.server).unwrap();
        }
    }
    for (number, client) in clients.iter().enumerate() {
        client.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
        let mut ids = BTreeSet::new();
        let mut buffer = [0u8; 2048];
        while ids.len() < usize::from(PER_CLIENT) {
            let length = client.recv(&mut buffer).unwrap_or_else(|error| {
                panic!("client {number}: {} of {PER_CLIENT} answered: {error}", ids.len())
            });
            let reply = Message::from_vec(&buffer[..length]).expect("a well-formed response");
            assert_eq!(message_addresses(&reply), member, "client {number}");
            assert!(ids.insert(reply.metadata.id), "id {} answered twice", reply.metadata.id);
        }
        let expected: BTreeSet<u16> = (0..PER_CLIENT).map(|id| number as u16 * 1000 + id).collect();
        assert_eq!(ids, expected, "client {number} got another client's answers");
    }
}

#[test]
fn binding_every_address_answers_on_ipv4_and_ipv6_loopback() {
    let announce_port = free_udp_port();
    let dns_port = free_port();
    let outputs = dns_output(dns_port, "", "")
        .replace(&format!("127.0.0.1:{dns_port}"), &format!(":{dns_port}"));
    let group = format!("  expire: {EXPIRE_SECONDS}s\n  readiness_delay: 0s\n");
    let listener = spawn_listener(&config(announce_port, &group, &outputs));
    listener.wait_for_log("listener started");
    let v4: SocketAddr = ([127, 0, 0, 1], dns_port).into();
    let fallbacks = |r: &DnsResponse| addresses(r) == ips(&["192.0.2.1", "192.0.2.2"]);
    wait_for(v4, NAME, RecordType::A, Via::Udp, "fallbacks over UDP", fallbacks);
    wait_for(v4, NAME, RecordType::A, Via::Tcp, "fallbacks over TCP", fallbacks);
    if UdpSocket::bind("[::1]:0").is_ok() {
        let v6: SocketAddr = format!("[::1]:{dns_port}").parse().unwrap();
        assert_eq!(addresses(&query(v6, NAME, RecordType::AAAA, Via::Udp)), ips(&["2001:db8::1"]));
        assert_eq!(addresses(&query(v6, NAME, RecordType::AAAA, Via::Tcp)), ips(&["2001:db8::1"]));
    }
}

// ---------------------------------------------------------------------------------------
// TCP connections: pipelining, the idle timeout, the connection limit
// ---------------------------------------------------------------------------------------

/// The server closes a connection idle for this long (its `TCP_IDLE_TIMEOUT`).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The server keeps at most this many TCP connections (its `MAX_TCP_CONNECTIONS`).
const MAX_TCP_CONNECTIONS: usize = 512;

/// A query for `name`/`record_type` with message id `id`, as bytes (no EDNS).
fn query_bytes(id: u16, name: &str, record_type: RecordType) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
    message.to_vec().unwrap()
}

/// `message` with its two-byte length in front, as DNS over TCP sends it (RFC 1035 §4.2.2).
fn framed(message: &[u8]) -> Vec<u8> {
    let mut frame = (message.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(message);
    frame
}

/// Reads one length-prefixed response from `stream`.
fn read_framed(stream: &mut TcpStream) -> std::io::Result<Message> {
    let mut length = [0u8; 2];
    stream.read_exact(&mut length)?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut message)?;
    Ok(Message::from_vec(&message).expect("a well-formed response"))
}

/// A TCP connection to `server` that gives up reading after `QUERY_TIMEOUT`.
fn connect(server: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(server).expect("a TCP connection");
    stream.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
    stream
}

/// Asks for [`NAME`] A on `stream`; the addresses answered, or why there was no answer.
fn ask_on(stream: &mut TcpStream, id: u16) -> Result<BTreeSet<IpAddr>, String> {
    stream
        .write_all(&framed(&query_bytes(id, NAME, RecordType::A)))
        .map_err(|e| format!("writing: {e}"))?;
    let reply = read_framed(stream).map_err(|e| format!("reading: {e}"))?;
    assert_eq!(reply.metadata.id, id, "the answer to another query");
    Ok(message_addresses(&reply))
}

fn message_addresses(message: &Message) -> BTreeSet<IpAddr> {
    message.answers.iter().filter_map(|record| record.data.ip_addr()).collect()
}

/// Whether the server has closed `stream`: end of stream (or a reset) rather than nothing
/// to read yet. Does not wait.
fn closed_by_server(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let closed = match (&*stream).read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the server sent something unasked"),
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn pipelined_tcp_queries_on_one_connection_are_each_answered_in_order() {
    let dns = start_dns("0s", "");
    dns.announce("10.0.0.1");
    dns.announce("2001:db8:1::1");
    dns.wait_for(NAME, RecordType::AAAA, Via::Tcp, "the IPv6 member", |r| {
        addresses(r) == ips(&["2001:db8:1::1"])
    });
    dns.wait_for(NAME, RecordType::A, Via::Tcp, "the IPv4 member", |r| {
        addresses(r) == ips(&["10.0.0.1"])
    });

    // Five queries written at once, before any answer is read, then a sixth whose frame
    // arrives in three pieces (length, half, rest).
    let asked = [
        (NAME, RecordType::A),
        (NAME, RecordType::AAAA),
        ("other.example.com.", RecordType::A),
        (NAME, RecordType::MX),
        ("WORKER.example.com.", RecordType::A),
        (NAME, RecordType::AAAA),
    ];
    let frames: Vec<Vec<u8>> = asked
        .iter()
        .enumerate()
        .map(|(i, (name, record_type))| framed(&query_bytes(0x100 + i as u16, name, *record_type)))
        .collect();
    let mut stream = connect(dns.server);
    stream.set_nodelay(true).unwrap();
    stream.write_all(&frames[..5].concat()).unwrap();
    let last = &frames[5];
    stream.write_all(&last[..2]).unwrap();
    stream.write_all(&last[2..8]).unwrap();
    stream.write_all(&last[8..]).unwrap();

    let v4 = ips(&["10.0.0.1"]);
    let v6 = ips(&["2001:db8:1::1"]);
    for (i, (name, record_type)) in asked.iter().enumerate() {
        let reply = read_framed(&mut stream)
            .unwrap_or_else(|e| panic!("no answer {i} ({name} {record_type}): {e}"));
        assert_eq!(reply.metadata.id, 0x100 + i as u16, "answers come in the order asked");
        let question = &reply.queries[0];
        assert_eq!(question.name().to_ascii(), *name);
        assert_eq!(question.query_type(), *record_type);
        let (code, expected) = match (i, record_type) {
            (2, _) => (ResponseCode::NXDomain, BTreeSet::new()),
            (_, RecordType::A) => (ResponseCode::NoError, v4.clone()),
            (_, RecordType::AAAA) => (ResponseCode::NoError, v6.clone()),
            _ => (ResponseCode::NoError, BTreeSet::new()),
        };
        assert_eq!(reply.metadata.response_code, code, "answer {i}");
        assert_eq!(message_addresses(&reply), expected, "answer {i}");
    }
    // The connection stays open for more.
    assert_eq!(ask_on(&mut stream, 7), Ok(v4));
}

#[test]
fn idle_tcp_connections_are_closed_while_busy_ones_stay_open() {
    let dns = start_dns("0s", "");
    dns.announce("10.0.0.1");
    let member = ips(&["10.0.0.1"]);
    dns.wait_for(NAME, RecordType::A, Via::Tcp, "the member", |r| addresses(r) == member);

    // One connection says nothing, one sends half a message, one asks about once a second.
    let opened = std::time::Instant::now();
    let silent = connect(dns.server);
    let mut half = connect(dns.server);
    half.write_all(&[0, 40, 0xAB, 0xCD]).unwrap();
    let mut busy = connect(dns.server);
    let mut asked = 0u16;
    let mut last_asked = opened;
    let (mut silent_closed, mut half_closed) = (None, None);
    let all_closed = eventually(|| {
        if last_asked.elapsed() >= Duration::from_secs(1) {
            asked += 1;
            assert_eq!(ask_on(&mut busy, asked), Ok(member.clone()), "query {asked}");
            last_asked = std::time::Instant::now();
        }
        if silent_closed.is_none() && closed_by_server(&silent) {
            silent_closed = Some(opened.elapsed());
        }
        if half_closed.is_none() && closed_by_server(&half) {
            half_closed = Some(opened.elapsed());
        }
        silent_closed.is_some() && half_closed.is_some()
    });
    assert!(all_closed, "idle connections still open after {:?}", opened.elapsed());
    let closed_at = silent_closed.unwrap().min(half_closed.unwrap());
    // Not closed at once: only after the timeout (a loaded machine can only make it later).
    assert!(closed_at >= TCP_IDLE_TIMEOUT / 2, "an idle connection closed after {closed_at:?}");
    // The connection that kept asking outlived them, and answers still.
    assert!(asked >= 3, "{asked} queries on the busy connection");
    assert_eq!(ask_on(&mut busy, 999), Ok(member));
}

#[test]
fn a_tcp_connection_beyond_the_limit_closes_the_oldest_only() {
    let dns = start_dns("0s", "");
    dns.announce("10.0.0.1");
    let member = ips(&["10.0.0.1"]);
    dns.wait_for(NAME, RecordType::A, Via::Tcp, "the member", |r| addresses(r) == member);

    // Answered on each: the server has accepted them, in this order.
    let mut oldest = connect(dns.server);
    assert_eq!(ask_on(&mut oldest, 1), Ok(member.clone()));
    let mut second = connect(dns.server);
    assert_eq!(ask_on(&mut second, 2), Ok(member.clone()));
    let others: Vec<TcpStream> =
        (0..MAX_TCP_CONNECTIONS - 3).map(|_| connect(dns.server)).collect();
    let mut last_within = connect(dns.server);
    // The server accepts in order: once the last one is answered, all are open.
    assert_eq!(ask_on(&mut last_within, 3), Ok(member.clone()));
    // At the limit, nothing is closed yet. (Asking also keeps the two oldest from reaching
    // the idle timeout however slow the machine, and makes the oldest by age the most
    // recently active: the one closed next is chosen by age, not by silence.)
    assert_eq!(ask_on(&mut oldest, 4), Ok(member.clone()), "at the limit");
    assert_eq!(ask_on(&mut second, 8), Ok(member.clone()), "at the limit");

    // One more: the oldest makes room for it.
    let mut newest = connect(dns.server);
    assert_eq!(ask_on(&mut newest, 5), Ok(member.clone()));
    assert!(eventually(|| closed_by_server(&oldest)), "the oldest connection is still open");
    // Only the oldest.
    assert_eq!(ask_on(&mut second, 6), Ok(member.clone()), "the second oldest");
    assert_eq!(ask_on(&mut last_within, 7), Ok(member.clone()));
    drop(others);
}

// ---------------------------------------------------------------------------------------
// Re-created after a panic
// ---------------------------------------------------------------------------------------

/// The dns plugin built with its `fault-injection` feature, which adds the spec key
/// `fault_injection: {panic_if_file_exists: PATH}`. Built once per test binary into a target
/// directory of its own beside the normal one, so that the plugins of the normal build are
/// neither replaced nor rebuilt; returns the directory that holds the `.so`.
fn fault_injection_plugin_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let binary = common::rgap_binary();
        let profile_dir = binary.parent().expect("binary has a directory");
        let target_dir = profile_dir.parent().expect("profile dir has a parent");
        let own_target = target_dir.join("fault-injection");
        let mut build = Command::new(env!("CARGO"));
        build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet", "-p", "rgap-output-dns", "--features", "fault-injection"])
            .arg("--target-dir")
            .arg(&own_target);
        let profile = profile_dir.file_name().expect("a profile directory");
        if profile == "release" {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build for the dns plugin");
        assert!(status.success(), "building the dns plugin with fault-injection failed");
        own_target.join(profile)
    })
}

#[test]
fn a_dns_output_re_created_after_a_panic_binds_its_port_again_and_serves() {
    let plugins = fault_injection_plugin_dir();
    let triggers = tempfile::tempdir().unwrap();
    let trigger = triggers.path().join("panic-now");
    let announce_port = free_udp_port();
    let dns_port = free_port();
    let spec_extra =
        format!("    fault_injection: {{panic_if_file_exists: '{}'}}\n", trigger.display());
    let outputs = dns_output(dns_port, "", &spec_extra);
    // The build with fault-injection comes first; a build without it would refuse the key.
    let config = format!(
        "plugin_dirs: ['{}']\n{}",
        plugins.display(),
        config(announce_port, "  expire: 30s\n  readiness_delay: 0s\n", &outputs)
    );
    let listener = spawn_listener(&config);
    listener.wait_for_log("listener started");
    let dns = Dns { listener, announce_port, server: ([127, 0, 0, 1], dns_port).into() };
    dns.announce("10.0.0.1");
    for via in [Via::Udp, Via::Tcp] {
        dns.wait_for(NAME, RecordType::A, via, "the first member", |r| {
            addresses(r) == ips(&["10.0.0.1"])
        });
    }

    // The next snapshot (the next member's) panics inside the plugin.
    std::fs::write(&trigger, "").unwrap();
    dns.announce("10.0.0.2");
    let panicked = dns.listener.wait_for_log("panicked: ");
    assert!(panicked.contains("output dns#1 panicked: "), "{panicked}");
    assert!(panicked.contains("fault injection"), "the plugin's own panic: {panicked}");
    assert!(panicked.contains("re-creating it from its spec in 1s"), "{panicked}");
    assert!(!trigger.exists(), "the plugin takes the trigger away: it panics once");
    dns.listener.wait_for_log("output dns#1 re-created; delivering a fresh snapshot");

    // The new instance serves on the same port, from the snapshot it was given (the old
    // one panicked before taking in the second member).
    let both = ips(&["10.0.0.1", "10.0.0.2"]);
    for via in [Via::Udp, Via::Tcp] {
        dns.wait_for(NAME, RecordType::A, via, "both members from the new instance", |r| {
            addresses(r) == both
        });
    }
    // And keeps following the group.
    dns.announce("10.0.0.3");
    let all = ips(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    dns.wait_for(NAME, RecordType::A, Via::Udp, "the third member", |r| addresses(r) == all);
    let log = dns.listener.log();
    assert_eq!(log.iter().filter(|line| line.contains("panicked: ")).count(), 1, "{log:#?}");
    assert!(!log.iter().any(|line| line.contains("re-creating failed")), "{log:#?}");
}

// ---------------------------------------------------------------------------------------
// Start errors
// ---------------------------------------------------------------------------------------

fn dns_start_error(spec: &str) -> String {
    let outputs = format!("- kind: dns\n  spec:\n{spec}");
    listener_start_error(&config(free_udp_port(), "  expire: 30s\n", &outputs))
}

#[test]
fn a_busy_port_is_a_start_error_naming_bind_address() {
    let busy = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let error = dns_start_error(&format!("    bind_address: 127.0.0.1:{port}\n"));
    assert!(
        error.contains(&format!(
            "spec.bind_address: cannot bind 127.0.0.1:{port} (UDP): Address already in use"
        )),
        "{error}"
    );

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let error = dns_start_error(&format!("    bind_address: 127.0.0.1:{port}\n"));
    assert!(
        error.contains(&format!(
            "spec.bind_address: cannot bind 127.0.0.1:{port} (TCP): Address already in use"
        )),
        "{error}"
    );
}

#[test]
fn a_bad_bind_address_is_a_start_error() {
    let error = dns_start_error("    bind_address: localhost\n");
    assert!(error.contains("spec.bind_address: \"localhost\" is not host:port"), "{error}");
    let error = dns_start_error("    bind_address: 127.0.0.1:70000\n");
    assert!(error.contains("spec.bind_address: "), "{error}");
}

/// A dns spec on a free port with one mapping, `name`, whose keys are `keys` (one a line).
fn spec_with_mapping(name: &str, keys: &[&str]) -> String {
    let keys: String = keys.iter().map(|key| format!("        {key}\n")).collect();
    format!("    bind_address: 127.0.0.1:{}\n    mappings:\n      {name}:\n{keys}", free_port())
}

#[test]
fn a_bad_name_is_a_start_error_naming_the_key() {
    let error = dns_start_error(&spec_with_mapping("bad..example.com", &["group: 1000"]));
    assert!(error.contains("spec.mappings.bad..example.com: invalid DNS name"), "{error}");
    let error = dns_start_error(&spec_with_mapping("\"has space.example.com\"", &["group: 1000"]));
    assert!(error.contains("spec.mappings.has space.example.com: invalid DNS name"), "{error}");
}

#[test]
fn a_bad_fallback_address_is_a_start_error_naming_the_key() {
    let error = dns_start_error(&spec_with_mapping(
        "a.example.com",
        &["group: 1000", "fallback_addresses: [1.2.3.4, 1.2.3]"],
    ));
    assert!(
        error.contains(
            "spec.mappings.a.example.com.fallback_addresses[1]: invalid IP address \"1.2.3\""
        ),
        "{error}"
    );
}

#[test]
fn unknown_keys_are_start_errors() {
    let port = free_port();
    let error =
        dns_start_error(&format!("    bind_address: 127.0.0.1:{port}\n    compres: true\n"));
    assert!(error.contains("compres"), "{error}");
    let error = dns_start_error(&spec_with_mapping(
        "a.example.com",
        &["group: 1000", "fallback: [1.2.3.4]"],
    ));
    assert!(error.contains("spec.mappings.a.example.com"), "{error}");
    assert!(error.contains("fallback"), "{error}");
}
