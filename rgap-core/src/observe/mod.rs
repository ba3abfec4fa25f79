//! Observing a running listener from outside: the optional HTTP endpoint (`http.listen`)
//! with `/metrics` (Prometheus text), `/health`, `/ready` and `/v1/members`, and the client
//! side of `rgap members`.
//!
//! Everything served is read from what the listener already keeps for itself (atomic
//! counters, the published group view, each output's status), never from a lock the
//! ingest path takes, so a slow or hostile HTTP client cannot hold up announcements. The
//! server runs on its own thread with its own small tokio runtime.

mod client;
mod http;
mod members;
mod metrics;
mod process;
mod query;
mod routes;

use std::sync::Arc;

use crate::listener::{GroupStats, ListenerStats};
use crate::plugin_host::{PluginHost, SharedView};

pub use client::{fetch_members, members_url, ClientError};
pub(crate) use http::{bind, HttpServer};
pub use members::{render_table, GroupMembers, MemberEntry, MembersReply};
pub(crate) use metrics::{Metrics, PluginMetrics};
pub(crate) use routes::Routes;

/// What the endpoint reports on: shared, read-only handles on the listener's own state.
#[derive(Clone)]
pub(crate) struct Observed {
    /// Datagrams received, accepted and dropped (by reason).
    pub stats: Arc<ListenerStats>,
    /// The groups as last published to outputs: members, readiness.
    pub view: SharedView,
    /// Accepted, joins and leaves per group.
    pub groups: GroupStats,
    /// The running outputs (their up/restarts/resyncs), whatever a reload made of them.
    pub outputs: Arc<PluginHost>,
}
