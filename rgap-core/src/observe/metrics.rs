//! `/metrics`: the listener's state in the Prometheus text format, written by
//! `prometheus-client`. Every family is produced at scrape time by a [`Collector`] reading
//! live state (nothing is copied into metric objects on the hot path); the collectors sit
//! in one registry, and another source of families joins it with [`Metrics::add`].

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::listener::DropReason;

use super::process;
use super::Observed;

/// The `Content-Type` of what [`Metrics::encode`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric family the endpoint serves.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// The listener's own families: build info, datagrams, groups, outputs, process.
    pub fn new(observed: &Observed) -> Metrics {
        let mut metrics = Metrics { registry: Registry::default() };
        metrics.add(Box::new(BuildInfo));
        metrics.add(Box::new(Datagrams(observed.clone())));
        metrics.add(Box::new(Groups(observed.clone())));
        metrics.add(Box::new(Outputs(observed.clone())));
        metrics.add(Box::new(process::ProcessCollector));
        metrics
    }

    /// Appends another source of families (e.g. the plugins' own metrics), encoded after
    /// those already added, at every scrape.
    pub fn add(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// The whole exposition, as of now.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Writes one counter, or one counter sample per label set, under `name` (which gets
/// `_total` appended).
fn counters<'a, L: prometheus_client::encoding::EncodeLabelSet + 'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// As [`counters`], for gauges.
fn gauges<'a, L: prometheus_client::encoding::EncodeLabelSet + 'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, i64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// `rgap_build_info{version,plugin_api} 1`.
#[derive(Debug)]
struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let help = "rgap's version and the plugin API version it loads plugins against";
        let mut info = encoder.encode_descriptor("rgap_build", help, None, MetricType::Info)?;
        let labels =
            [("version", env!("CARGO_PKG_VERSION")), ("plugin_api", rgap_plugin_api::API_VERSION)];
        info.encode_info(&labels)
    }
}

/// Datagrams received and dropped by reason, from the sources' counters.
struct Datagrams(Observed);

impl fmt::Debug for Datagrams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Datagrams")
    }
}

impl Collector for Datagrams {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let counts = self.0.stats.read();
        let help = "Datagrams read from the listen sockets";
        let received = encoder.encode_descriptor(
            "rgap_datagrams_received",
            help,
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(counts.received).encode(received)?;
        // The reasons of the drop log line, all of them, so a rate of 0 is visible too.
        counters(
            &mut encoder,
            "rgap_datagrams_dropped",
            "Datagrams dropped, by the check they failed",
            DropReason::ALL
                .iter()
                .map(|&reason| ([("reason", reason.name())], counts.dropped[reason as usize])),
        )
    }
}

/// Per-group counters (from the table) and gauges (from the published view), by group id.
struct Groups(Observed);

impl fmt::Debug for Groups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Groups")
    }
}

impl Collector for Groups {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let view = self.0.view.load();
        let mut counts: Vec<_> =
            self.0.groups.load().iter().map(|counters| counters.read()).collect();
        counts.sort_unstable_by_key(|count| count.id);
        let mut states: Vec<_> = view.groups.iter().collect();
        states.sort_unstable_by_key(|group| group.id);
        let by_group = |value: fn(&crate::listener::GroupCounts) -> u64| {
            counts.iter().map(move |count| ([("group", count.id)], value(count)))
        };
        counters(
            &mut encoder,
            "rgap_announcements_accepted",
            "Announcements that passed every check, by group",
            by_group(|count| count.accepted),
        )?;
        gauges(
            &mut encoder,
            "rgap_group_members",
            "Live members, by group (as last published to outputs)",
            states.iter().map(|group| ([("group", group.id)], group.members.len() as i64)),
        )?;
        gauges(
            &mut encoder,
            "rgap_group_ready",
            "1 once the group is past its readiness_delay, else 0",
            states.iter().map(|group| ([("group", group.id)], i64::from(group.ready))),
        )?;
        counters(
            &mut encoder,
            "rgap_member_joins",
            "Addresses that joined, by group",
            by_group(|count| count.joins),
        )?;
        counters(
            &mut encoder,
            "rgap_member_leaves",
            "Addresses that left, by group",
            by_group(|count| count.leaves),
        )
    }
}

/// Each output instance: up, re-created, resynchronised.
struct Outputs(Observed);

impl fmt::Debug for Outputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Outputs")
    }
}

impl Collector for Outputs {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let outputs: &[Arc<_>] = &self.0.outputs.statuses();
        gauges(
            &mut encoder,
            "rgap_output_up",
            "1 while the output has a running instance, 0 after a panic until it is re-created",
            outputs.iter().map(|output| {
                let labels = [("output", output.name.as_str()), ("kind", output.kind.as_str())];
                (labels, i64::from(output.is_up()))
            }),
        )?;
        counters(
            &mut encoder,
            "rgap_output_restarts",
            "Times the output was re-created after a panic",
            outputs.iter().map(|output| ([("output", output.name.as_str())], output.restarts())),
        )?;
        counters(
            &mut encoder,
            "rgap_output_resyncs",
            "Times the output fell behind and was sent a Resync and a fresh snapshot",
            outputs.iter().map(|output| ([("output", output.name.as_str())], output.resyncs())),
        )
    }
}

/// The plugins' own metrics: each family an output registered, as
/// `rgap_plugin_<kind>_<name>{output="<instance>",<its labels>}`. Instances of one kind share
/// a family; read from the outputs running at scrape time, so a reload shows at once.
pub(crate) struct PluginMetrics(pub Arc<crate::plugin_host::PluginHost>);

impl fmt::Debug for PluginMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PluginMetrics")
    }
}

/// One exposed family: help, kind, then (labels, value) per instance and label set.
type PluginFamily = (String, rgap_plugin_api::MetricKind, Vec<(Vec<(String, String)>, i64)>);

impl Collector for PluginMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut families: std::collections::BTreeMap<String, PluginFamily> = Default::default();
        for output in self.0.output_metrics() {
            let kind = output.kind.replace('-', "_");
            for family in output.registry.sample() {
                let name = format!("rgap_plugin_{kind}_{}", family.name);
                let entry = families
                    .entry(name)
                    .or_insert_with(|| (family.help.clone(), family.kind, Vec::new()));
                if entry.1 != family.kind {
                    // Two instances disagree on a family's kind: keep the first.
                    continue;
                }
                for (values, value) in family.values {
                    let mut labels = vec![("output".to_owned(), output.output.clone())];
                    labels.extend(family.label_names.iter().cloned().zip(values));
                    entry.2.push((labels, value));
                }
            }
        }
        for (name, (help, kind, samples)) in families {
            if kind == rgap_plugin_api::MetricKind::COUNTER {
                // The encoder appends `_total` to counters itself.
                let base = name.strip_suffix("_total").unwrap_or(&name);
                counters(
                    &mut encoder,
                    base,
                    &help,
                    samples.into_iter().map(|(labels, value)| (labels, value.max(0) as u64)),
                )?;
            } else {
                gauges(&mut encoder, &name, &help, samples)?;
            }
        }
        Ok(())
    }
}
