//! `rgap-bench`: benchmarks of the real `rgap` listener on loopback.
//!
//! * `ingest`: N distinct valid announcements at a given rate, optionally mixed with junk;
//!   reports listener CPU per announcement, announcements lost and peak RSS.
//! * `scale`: many live members in one or many groups with hostsfile, dns and log outputs;
//!   reports time to absorb them, RSS, and CPU per later change.
//! * `propagation`: time from an announcement to its address in a DNS answer and in the
//!   hosts file, p50 and p99.
//! * `metrics`: how long `/metrics` takes to answer with many groups.
//! * `flood`: valid announcements beside an unpaced flood of forged ones; how many get in.
//! * `dnsload`: DNS queries over UDP from batched, connected clients: a load generator for
//!   `bench/dns/run.sh` that spends less CPU per query than dnsperf.
//! * `floor`: the kernel's receive path alone, read as a source reads: the floor under
//!   ingest's CPU per announcement.
//! * `million`: a million members in one or many groups; memory, and the cost of one change.
//! * `soak`: churn for minutes or hours; RSS and CPU over time, a CSV and a PNG plot.
//! * `all`: every scenario behind the README's Performance figures, N runs each, with
//!   min/median/max, the commit and the machine, and the tables as Markdown.
//!
//! Build first: `cargo build --release --workspace`, then run
//! `target/release/rgap-bench <scenario> --help`. Traffic goes to loopback only, and every
//! load loop is bounded by the counts given.

mod all;
mod blaster;
mod dnsload;
mod figures;
mod flood;
mod floor;
mod listener;
mod million;
mod plot;
mod scenarios;
mod scrape;
mod soak;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rgap-bench", about = "Benchmarks of the real rgap listener on loopback")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Valid announcements (and junk) at a rate; CPU per announcement, loss, peak RSS
    Ingest(scenarios::IngestArgs),
    /// Many members in one or many groups with hostsfile, dns and log outputs
    Scale(scenarios::ScaleArgs),
    /// Announcement → DNS answer and hosts file line, p50/p99
    Propagation(scenarios::PropagationArgs),
    /// Time to answer /metrics with many groups, p50/p99/max
    Metrics(scenarios::MetricsArgs),
    /// Valid announcements at a rate beside an unpaced flood of forged ones
    Flood(flood::FloodArgs),
    /// The kernel's receive path alone (as a source reads), the floor under ingest's CPU
    Floor(floor::FloorArgs),
    /// A million members: time and CPU to load, RSS, CPU of one later join or leave
    Million(million::MillionArgs),
    /// Churn for a long time; RSS, CPU and live members over time, with a PNG plot
    Soak(soak::SoakArgs),
    /// DNS load over UDP with batched sends and reads, for bench/dns/run.sh (LOADGEN=rgap-bench)
    Dnsload(dnsload::DnsLoadArgs),
    /// Every scenario behind the README's Performance figures, N runs each: min/median/max,
    /// the commit and the machine, and the README's tables as Markdown
    All(all::AllArgs),
}

fn main() {
    match Cli::parse().scenario {
        Scenario::Ingest(args) => scenarios::ingest(&args),
        Scenario::Scale(args) => scenarios::scale(&args),
        Scenario::Propagation(args) => scenarios::propagation(&args),
        Scenario::Metrics(args) => scenarios::metrics(&args),
        Scenario::Flood(args) => flood::flood(&args),
        Scenario::Floor(args) => floor::floor(&args),
        Scenario::Million(args) => million::million(&args),
        Scenario::Soak(args) => soak::soak(&args),
        Scenario::Dnsload(args) => dnsload::dnsload(&args),
        Scenario::All(args) => all::all(&args),
    }
}
