//! The standard `process_*` metrics (as every Prometheus client library names them), read
//! from `/proc/self` at scrape time: CPU seconds, resident and virtual memory, open and
//! maximum file descriptors, start time. `prometheus-client` has no process collector.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// What `/proc/self/stat` says, already in seconds and bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcStat {
    cpu_seconds: f64,
    start_after_boot_seconds: f64,
    virtual_bytes: u64,
    resident_bytes: u64,
}

/// Parses the text of `/proc/<pid>/stat` given the clock tick rate and page size.
fn parse_stat(text: &str, ticks_per_second: f64, page_size: u64) -> Option<ProcStat> {
    // The command name (field 2) may hold spaces and parentheses: fields resume after the
    // last ')'. There, index 0 is field 3 (state).
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks_per_second,
        start_after_boot_seconds: field(22)? as f64 / ticks_per_second,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page_size,
    })
}

/// The boot time from the text of `/proc/stat` (`btime`, Unix seconds).
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then_some(limit.rlim_cur)
}

/// Scrape-time reader of `/proc/self`; a value that cannot be read is left out.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) =
            unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|text| parse_stat(&text, ticks.max(1) as f64, page.max(1) as u64));
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| parse_boot_time(&t));
        if let Some(stat) = stat {
            let help = "Total user and system CPU time spent in seconds";
            let family = encoder.encode_descriptor(
                "process_cpu_seconds",
                help,
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(stat.cpu_seconds).encode(family)?;
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                stat.resident_bytes,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                stat.virtual_bytes,
            )?;
            if let Some(boot) = boot {
                let start = boot as f64 + stat.start_after_boot_seconds;
                let help = "Start time of the process since unix epoch in seconds";
                let family = encoder.encode_descriptor(
                    "process_start_time_seconds",
                    help,
                    None,
                    MetricType::Gauge,
                )?;
                ConstGauge::new(start).encode(family)?;
            }
        }
        if let Some(open) = open_fds() {
            gauge(&mut encoder, "process_open_fds", "Number of open file descriptors", open)?;
        }
        if let Some(max) = max_fds() {
            gauge(&mut encoder, "process_max_fds", "Maximum number of open file descriptors", max)?;
        }
        Ok(())
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(family)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_a_command_name_with_spaces_and_parentheses() {
        // Fields 3.. of a real line, behind a name chosen to confuse a naive split.
        let text = "4242 (rgap (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 50 0 0 20 0 9 0 \
                    123400 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 4096 17415 0 0 0 17 1 0 0 0 0 0";
        let stat = parse_stat(text, 100.0, 4096).expect("parses");
        assert_eq!(stat.cpu_seconds, 2.0);
        assert_eq!(stat.start_after_boot_seconds, 1234.0);
        assert_eq!(stat.virtual_bytes, 104_857_600);
        assert_eq!(stat.resident_bytes, 2560 * 4096);
    }

    #[test]
    fn boot_time_is_the_btime_line() {
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }

    #[test]
    fn this_process_has_every_family() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_start_time_seconds ",
            "process_open_fds ",
            "process_max_fds ",
        ] {
            assert!(text.lines().any(|line| line.starts_with(name)), "{name} in:\n{text}");
        }
    }
}
