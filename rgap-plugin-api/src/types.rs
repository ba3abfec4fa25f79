//! The data that crosses the plugin boundary: members, events, group snapshots, log levels
//! and errors. Every type here is `#[repr(C)]` + `StableAbi`, so its layout is checked when a
//! plugin is loaded; changing any of them is a breaking change of `rgap-plugin-api`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use abi_stable::std_types::{RArc, RString, RVec};
use abi_stable::StableAbi;

/// One live address of a group and the moment its announcement runs out.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Member {
    /// The address as announced on the wire: IPv6, with IPv4 as `::ffff:a.b.c.d`.
    pub address: [u8; 16],
    /// When the member leaves unless refreshed: Unix time in microseconds.
    pub expires_at_unix_us: i64,
}

impl Member {
    /// The address, with IPv4-mapped addresses given back as plain IPv4.
    pub fn ip(&self) -> IpAddr {
        Ipv6Addr::from(self.address).to_canonical()
    }
}

/// A change of group membership, delivered in order before the snapshot that follows it.
///
/// This enum is complete by design: the protocol knows no other membership change, and a
/// refresh (a member's expiry moving later) is not an event but shows in the next snapshot.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A new address announced itself in `group`.
    Join {
        /// The group id from the listener's config.
        group: u64,
        /// The address that joined, with its first expiry.
        member: Member,
    },
    /// An address was not refreshed before its expiry and left `group`.
    Leave {
        /// The group id from the listener's config.
        group: u64,
        /// The address that left, with the expiry it reached.
        member: Member,
    },
    /// `group` passed its `readiness_delay`: outputs may publish it from now on.
    Ready {
        /// The group id from the listener's config.
        group: u64,
    },
    /// Events were lost because this output fell behind; the snapshot that follows is the truth.
    Resync,
}

impl Event {
    /// The group the event is about, if any.
    pub fn group(&self) -> Option<u64> {
        match *self {
            Event::Join { group, .. } | Event::Leave { group, .. } | Event::Ready { group } => {
                Some(group)
            }
            Event::Resync => None,
        }
    }
}

/// The state of one group, borrowed for the duration of an `on_snapshot` call.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct GroupSnapshot<'a> {
    /// The group id from the listener's config.
    pub id: u64,
    /// Whether `readiness_delay` has passed; outputs do not publish a group before that.
    pub ready: bool,
    /// Changes whenever `members` or `ready` changes (and only then), so a plugin can keep
    /// what it derived from an unchanged group instead of redoing the work for every group.
    pub revision: u64,
    /// Changes whenever the set of addresses changes (a join or a leave), and only then: a
    /// refresh that only moves an expiry leaves it alone. Outputs that show addresses but
    /// not expiry times (a hosts file, a command's input) need not look again until it moves.
    pub membership_revision: u64,
    /// The live members, in no particular order, in the list the listener shares with
    /// every output: keep it with [`GroupSnapshot::share_members`] instead of copying it.
    pub members: &'a MemberList,
}

/// A group's member list as the listener publishes it: immutable and reference-counted, so
/// an output that keeps it (to render later, on another thread) costs a count, not a copy.
pub type MemberList = RArc<RVec<Member>>;

impl GroupSnapshot<'_> {
    /// The live members as an ordinary slice.
    pub fn members(&self) -> &[Member] {
        self.members.as_slice()
    }

    /// The member list itself, to keep beyond this call (shared, not copied).
    pub fn share_members(&self) -> MemberList {
        self.members.clone()
    }
}

/// Severity of a log line sent from a plugin to the host.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Something failed and needs an operator.
    Error = 1,
    /// Something is wrong but work goes on.
    Warn = 2,
    /// Normal operation worth a line.
    Info = 3,
    /// Detail for diagnosing.
    Debug = 4,
    /// Very verbose detail.
    Trace = 5,
}

/// Counters the host shares with plugins, read-only.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Datagrams read from every source.
    pub datagrams_received: u64,
    /// Announcements that passed every check and reached the group table.
    pub announcements_accepted: u64,
    /// Datagrams dropped for any reason (bad length, unknown group, skew, signature...).
    pub datagrams_dropped: u64,
}

/// Why a plugin call failed.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The plugin reported an error (bad spec, I/O failure...): the instance stays usable.
    Failed,
    /// The plugin panicked; the panic was caught at the boundary. The instance is poisoned.
    Panicked,
}

/// An error returned across the boundary by a plugin.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// An ordinary error, or a caught panic.
    pub kind: ErrorKind,
    /// What went wrong, on one line; for a panic, its message and location.
    pub message: RString,
}

impl PluginError {
    /// An ordinary error with `message`.
    pub fn failed(message: impl Into<String>) -> Self {
        PluginError { kind: ErrorKind::Failed, message: RString::from(message.into()) }
    }

    /// A caught panic with its message.
    pub fn panicked(message: impl Into<String>) -> Self {
        PluginError { kind: ErrorKind::Panicked, message: RString::from(message.into()) }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Failed => f.write_str(&self.message),
            ErrorKind::Panicked => write!(f, "panicked: {}", self.message),
        }
    }
}

impl std::error::Error for PluginError {}
