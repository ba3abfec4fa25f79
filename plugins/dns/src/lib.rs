//! `dns`: an authoritative DNS server for the mapped names, answering with the live members
//! of each name's group (A for IPv4, AAAA for IPv6, TTL = seconds each member has left),
//! or the name's fallback addresses with TTL 0 while the group is empty; SERVFAIL while the
//! group is not ready. Spec keys as in the Go rgap: `bind_address`, `mappings`, `compress`,
//! `non_authoritative`; and `max_answers` and `rate_limit` for hostile load.
//!
//! The delivery thread turns each snapshot into a new immutable view (`view`) and swaps
//! it in; the server thread (`server`, `batch`, `limit`) answers from whichever view is
//! current (`answer`, written by `wire`), so a change shows in the next answer and no query
//! waits for ingestion; `metrics` counts what it does. `README.md` beside this crate has the
//! details and the numbers.

mod answer;
mod batch;
mod limit;
mod metrics;
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
        Ok(DnsOutput { publisher, server, mapping_keys })
    }

    fn on_snapshot(&mut self, groups: &[GroupSnapshot<'_>]) -> Result<(), BoxError> {
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
