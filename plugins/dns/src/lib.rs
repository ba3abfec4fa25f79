//! `dns`: an authoritative DNS server for the mapped names, answering with the live members
//! of each name's group (A for IPv4, AAAA for IPv6, TTL = seconds each member has left),
//! or the name's fallback addresses with TTL 0 while the group is empty; SERVFAIL while the
//! group is not ready. Spec keys as in the Go rgap: `bind_address`, `mappings`, `compress`,
//! `non_authoritative`; and `max_answers` and `rate_limit` for hostile load.
//!
//! The delivery thread rebuilds each mapped group whose snapshot revision moved and swaps
//! it into that group's own slot (`view`), so one change costs work for that group only;
//! the server thread (`server`, `batch`, `limit`) answers from whatever each slot holds
//! (`answer`, written by `wire`), so a change shows in the next answer and no query waits
//! for ingestion; `metrics` counts what it does. `README.md` beside this crate has the
//! details and the numbers.

mod answer;
mod batch;
#[cfg(feature = "fault-injection")]
mod fault;
mod limit;
mod metrics;
mod question;
mod server;
mod spec;
mod view;
mod wire;

use std::collections::HashSet;
use std::sync::Arc;

use rgap_plugin_api::{export_output, BoxError, GroupSnapshot, HostHandle, OutputPlugin};

use answer::{Responder, Style};
use metrics::Metrics;
use server::Server;
use spec::{Config, DnsSpec};
use view::Publisher;

struct DnsOutput {
    publisher: Publisher,
    server: Server,
    /// For the warning about groups the listener does not have.
    mapping_keys: Vec<(u64, String)>,
    #[cfg(feature = "fault-injection")]
    fault: Option<fault::FaultSpec>,
}

impl OutputPlugin for DnsOutput {
    const KIND: &'static str = "dns";
    const DESCRIPTION: &'static str =
        "Authoritative DNS server (UDP and TCP) answering A/AAAA with each name's group members";
    // Snapshots only: events are answered without entering the plugin.
    const WANTS_EVENTS: bool = false;
    type Spec = DnsSpec;

    /// Every check `create` makes but binding the sockets.
    fn validate(spec: &DnsSpec, _host: &HostHandle) -> Result<(), BoxError> {
        Config::from_spec(spec)?;
        Ok(())
    }

    fn create(spec: DnsSpec, host: HostHandle) -> Result<Self, BoxError> {
        let config = Config::from_spec(&spec)?;
        let bound = server::bind(config.bind).map_err(|why| format!("spec.bind_address: {why}"))?;
        let addresses = bound.addresses();
        let mut mapping_keys: Vec<(u64, String)> =
            config.names.values().map(|mapped| (mapped.group, mapped.key.clone())).collect();
        mapping_keys.sort();
        let publisher =
            Publisher::new(config.names.values().map(|m| m.group).collect::<HashSet<_>>());
        let style = Style {
            compress: config.compress,
            authoritative: config.authoritative,
            max_answers: config.max_answers,
        };
        let metrics = Metrics::register(&host);
        let responder =
            Arc::new(Responder::new(config.names, publisher.published(), style, metrics));
        let server = Server::start(bound, responder, config.rate_limit, host)?;
        tracing::info!(
            "serving {} name(s) over UDP and TCP on {}",
            mapping_keys.len(),
            addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        );
        Ok(DnsOutput {
            publisher,
            server,
            mapping_keys,
            #[cfg(feature = "fault-injection")]
            fault: spec.fault_injection.clone(),
        })
    }

    fn on_snapshot(&mut self, groups: &[GroupSnapshot<'_>]) -> Result<(), BoxError> {
        #[cfg(feature = "fault-injection")]
        if let Some(fault) = &self.fault {
            fault.check();
        }
        for group in self.publisher.update(groups) {
            for (_, key) in self.mapping_keys.iter().filter(|(id, _)| *id == group) {
                tracing::warn!(
                    "spec.mappings.{key}: group {group} is not one of the listener's groups; \
                     this name will answer SERVFAIL"
                );
            }
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<(), BoxError> {
        self.server.stop()?;
        Ok(())
    }
}

export_output!(DnsOutput);

/// The plugin driven through rgap-plugin-api's testkit: the same FFI glue as the listener,
/// real sockets on loopback.
#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    use hickory_server::proto::op::{Message, Query};
    use hickory_server::proto::rr::{DNSClass, Name, RecordType};
    use rgap_plugin_api::testkit::{Harness, TestGroup};
    use rgap_plugin_api::MetricKind;

    use super::DnsOutput;

    const SPEC: &str = "bind_address: 127.0.0.1:0\nmappings:\n  worker.example.com:\n    \
                        group: 1000\n";

    /// Makes an instance with `SPEC` plus `extra` keys; returns it with its UDP address,
    /// read from its log line.
    fn start(extra: &str) -> (Harness, SocketAddr) {
        let harness = Harness::new::<DnsOutput>(&format!("{SPEC}{extra}")).unwrap();
        let line = harness
            .logs()
            .into_iter()
            .find_map(|(_, line)| {
                line.split_once("over UDP and TCP on ").map(|(_, a)| a.to_owned())
            })
            .expect("the serving line");
        (harness, line.trim().parse().expect("an address"))
    }

    fn query_bytes(name: &str, record_type: RecordType, class: DNSClass) -> Vec<u8> {
        let mut query = Query::query(Name::from_ascii(name).unwrap(), record_type);
        query.set_query_class(class);
        let mut message = Message::query();
        message.add_query(query);
        message.to_vec().unwrap()
    }

    /// Sends `query` from `socket`; the response, or `None` after `wait`.
    fn ask(
        socket: &UdpSocket,
        server: SocketAddr,
        query: &[u8],
        wait: Duration,
    ) -> Option<Message> {
        socket.set_read_timeout(Some(wait)).unwrap();
        socket.send_to(query, server).unwrap();
        let mut buffer = [0u8; 2048];
        let length = socket.recv(&mut buffer).ok()?;
        Some(Message::from_vec(&buffer[..length]).unwrap())
    }

    fn metric(harness: &Harness, name: &str, labels: &[&str]) -> i64 {
        harness.metric(name, labels).unwrap_or_else(|| panic!("{name}{labels:?} registered"))
    }

    #[test]
    fn validate_checks_every_key_but_binds_nothing() {
        // The port is taken: create would fail, validate must not try.
        let busy = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let spec = SPEC.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
        Harness::validate::<DnsOutput>(&spec).unwrap();
        assert!(Harness::new::<DnsOutput>(&spec).is_err(), "create binds, and fails");

        for (extra, expected) in [
            ("max_answers: 0\n", "spec.max_answers: must be at least 1"),
            ("rate_limit: {responses_per_second: 10, slip: 11}\n", "spec.rate_limit.slip: 11"),
            ("rate_limit: {responses_per_second: 0}\n", "spec.rate_limit.responses_per_second"),
            ("rate_limits: {}\n", "spec.rate_limits: unknown field"),
            ("  bad..name:\n    group: 1\n", "spec.mappings.bad..name: invalid DNS name"),
        ] {
            let error = Harness::validate::<DnsOutput>(&format!("{SPEC}{extra}")).unwrap_err();
            assert!(error.to_string().contains(expected), "{extra:?}: {error}");
        }
        let error = Harness::validate::<DnsOutput>("bind_address: nowhere\n").unwrap_err();
        assert!(error.to_string().starts_with("spec.bind_address: "), "{error}");
        let good = format!("{SPEC}max_answers: 4\nrate_limit: {{responses_per_second: 50}}\n");
        Harness::validate::<DnsOutput>(&good).unwrap();
    }

    /// The fault-injection key exists only in test builds with the feature; every other
    /// build refuses it like any unknown key.
    #[cfg(not(feature = "fault-injection"))]
    #[test]
    fn fault_injection_is_an_unknown_key_without_the_feature() {
        let spec = format!("{SPEC}fault_injection: {{panic_if_file_exists: /tmp/x}}\n");
        let error = Harness::validate::<DnsOutput>(&spec).unwrap_err().to_string();
        assert!(error.contains("unknown field `fault_injection`"), "{error}");
    }

    #[test]
    fn answers_are_counted_by_response_code_and_truncation() {
        let (mut harness, server) = start("");
        for (name, labels) in [("queries_total", ["NOERROR"]), ("rate_limited_total", ["dropped"])]
        {
            assert_eq!(harness.metric(name, &labels), Some(0), "{name} registered up front");
            assert_eq!(harness.metric_kind(name), Some(MetricKind::COUNTER));
        }
        assert_eq!(harness.metric("truncated_total", &[]), Some(0));

        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let wait = Duration::from_secs(5);
        let a = query_bytes("worker.example.com.", RecordType::A, DNSClass::IN);
        // Not yet reported by the listener: SERVFAIL.
        assert!(ask(&socket, server, &a, wait).is_some());
        assert_eq!(metric(&harness, "queries_total", &["SERVFAIL"]), 1);

        let mut group = TestGroup::ready(1000);
        for i in 0..300 {
            group = group.with_ip(&format!("10.0.{}.{}", i / 200, i % 200 + 1), 60);
        }
        harness.snapshot(&[group]).unwrap();
        let reply = ask(&socket, server, &a, wait).unwrap();
        assert!(reply.metadata.truncation && !reply.answers.is_empty());
        let nx = query_bytes("other.example.com.", RecordType::A, DNSClass::IN);
        ask(&socket, server, &nx, wait).unwrap();
        let chaos = query_bytes("worker.example.com.", RecordType::A, DNSClass::CH);
        ask(&socket, server, &chaos, wait).unwrap();
        // Counted before the response leaves: no waiting needed.
        assert_eq!(metric(&harness, "queries_total", &["NOERROR"]), 1);
        assert_eq!(metric(&harness, "queries_total", &["NXDOMAIN"]), 1);
        assert_eq!(metric(&harness, "queries_total", &["REFUSED"]), 1);
        assert_eq!(metric(&harness, "truncated_total", &[]), 1);
        harness.stop().unwrap();
    }

    #[test]
    fn rate_limited_queries_are_counted_as_dropped_or_slipped() {
        let (mut harness, server) = start("rate_limit: {responses_per_second: 1, slip: 2}\n");
        harness.snapshot(&[TestGroup::ready(1000).with_ip("10.0.0.1", 60)]).unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = query_bytes("worker.example.com.", RecordType::A, DNSClass::IN);
        let (mut full, mut slipped, mut silent) = (0, 0, 0);
        for _ in 0..10 {
            match ask(&socket, server, &a, Duration::from_millis(150)) {
                Some(reply) if reply.metadata.truncation && reply.answers.is_empty() => {
                    slipped += 1
                }
                Some(reply) => {
                    assert_eq!(reply.answers.len(), 1);
                    full += 1;
                }
                None => silent += 1,
            }
        }
        // One a second: the burst gets its first answer whole, then about every other one
        // truncated (a refill during the burst may answer one more in full).
        assert!((1..=2).contains(&full), "{full} full answers");
        assert!(slipped >= 4 && silent >= 3, "{slipped} slipped, {silent} dropped");
        assert_eq!(metric(&harness, "rate_limited_total", &["slipped"]), slipped);
        assert_eq!(metric(&harness, "rate_limited_total", &["dropped"]), silent);
        assert_eq!(metric(&harness, "queries_total", &["NOERROR"]), full + slipped);
        harness.stop().unwrap();
    }
}
