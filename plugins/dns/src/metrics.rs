//! The dns output's counters, exposed by the listener as `rgap_plugin_dns_<name>`:
//! `queries_total{rcode}`, `truncated_total` and `rate_limited_total{action}`.
//!
//! Every counter is registered with the host once, at create; answering a query then costs
//! one atomic add per counter it moves (no allocation, no lock, no call into the host).

use hickory_server::proto::op::ResponseCode;
use rgap_plugin_api::{Counter, HostHandle};

/// The response codes this output sends, with their `rcode` label.
const RCODES: [(ResponseCode, &str); 7] = [
    (ResponseCode::NoError, "NOERROR"),
    (ResponseCode::FormErr, "FORMERR"),
    (ResponseCode::ServFail, "SERVFAIL"),
    (ResponseCode::NXDomain, "NXDOMAIN"),
    (ResponseCode::NotImp, "NOTIMP"),
    (ResponseCode::Refused, "REFUSED"),
    (ResponseCode::BADVERS, "BADVERS"),
];

/// What response rate limiting did with a query over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Not answered at all.
    Dropped,
    /// Answered truncated (TC, no records), so that a real client retries over TCP.
    Slipped,
}

/// The counters (none, unread, when made without a host, as unit tests of the answers do).
pub struct Metrics {
    counters: Option<Counters>,
}

struct Counters {
    /// By the position of their code in [`RCODES`].
    queries: [Counter; RCODES.len()],
    truncated: Counter,
    dropped: Counter,
    slipped: Counter,
}

impl Metrics {
    /// Registers the families with the host and picks every label combination up front.
    pub fn register(host: &HostHandle) -> Metrics {
        let queries = host.counter(
            "queries_total",
            "DNS queries answered, by the response code sent",
            &["rcode"],
        );
        let truncated = host.counter(
            "truncated_total",
            "Responses sent with TC set because the answers did not fit (slipped ones not counted)",
            &[],
        );
        let limited = host.counter(
            "rate_limited_total",
            "UDP queries over a client prefix's rate limit: dropped, or slipped (answered with TC)",
            &["action"],
        );
        Metrics {
            counters: Some(Counters {
                queries: RCODES.map(|(_, label)| queries.with_labels(&[label])),
                truncated: truncated.with_labels(&[]),
                dropped: limited.with_labels(&["dropped"]),
                slipped: limited.with_labels(&["slipped"]),
            }),
        }
    }

    /// Counters nobody reads.
    #[cfg(test)]
    pub fn none() -> Metrics {
        Metrics { counters: None }
    }

    /// A response with `code` was sent.
    pub fn answered(&self, code: ResponseCode) {
        if let Some(counters) = &self.counters {
            if let Some(index) = RCODES.iter().position(|(known, _)| *known == code) {
                counters.queries[index].inc();
            }
        }
    }

    /// A response was cut to fit and sent with TC.
    pub fn truncated(&self) {
        if let Some(counters) = &self.counters {
            counters.truncated.inc();
        }
    }

    /// A query was over its prefix's rate limit.
    pub fn rate_limited(&self, action: Limited) {
        if let Some(counters) = &self.counters {
            match action {
                Limited::Dropped => counters.dropped.inc(),
                Limited::Slipped => counters.slipped.inc(),
            }
        }
    }
}
