//! Plugin metrics: a plugin registers counters and gauges through its host handle and
//! updates them with plain atomic operations on memory the host reads when it is scraped.
//! No allocation, lock or call across the boundary on the update path; registering a family
//! and choosing its label values (done once, up front) are the only calls into the host.
//!
//! The listener exposes each family as `rgap_plugin_<kind>_<name>` with an `output` label
//! naming the instance plus the family's own labels.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, RResult, RSlice, RStr};
use abi_stable::{sabi_trait, StableAbi};

use crate::types::PluginError;

/// What a metric family counts. A struct around an integer rather than an enum, so that
/// later kinds can be added without changing the layout old plugins were checked against.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetricKind(u8);

impl MetricKind {
    /// Only ever goes up (by whole numbers); exposed with `_total` in its name.
    pub const COUNTER: MetricKind = MetricKind(0);
    /// Goes up and down; holds a signed integer.
    pub const GAUGE: MetricKind = MetricKind(1);

    /// The kind's name in the Prometheus text format.
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::COUNTER => "counter",
            MetricKind::GAUGE => "gauge",
            _ => "unknown",
        }
    }
}

/// A family as a plugin declares it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct MetricDesc<'a> {
    /// Lowercase letters, digits and `_`, starting with a letter; counters end in `_total`.
    pub name: RStr<'a>,
    /// One line of help text.
    pub help: RStr<'a>,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// The names of the family's labels, in the order values are given for them.
    pub label_names: RSlice<'a, RStr<'a>>,
}

/// The value behind one labelled metric, shared between the plugin (which updates it) and
/// the host (which reads it when scraped).
pub type MetricValue = RArc<AtomicU64>;

/// A registered family: asks the host for the value of one combination of label values.
#[sabi_trait]
pub trait MetricFamily: Send + Sync + Clone {
    /// The value for `label_values` (one per label name, in order); the same value every
    /// time for the same labels. Call it once per combination and keep what it returns.
    #[sabi(last_prefix_field)]
    fn with_labels(&self, label_values: RSlice<'_, RStr<'_>>) -> RResult<MetricValue, PluginError>;
}

/// A family as plugins hold it.
pub type MetricFamilyBox = MetricFamily_TO<'static, RArc<()>>;

/// A counter for one combination of labels: cheap to clone and to update from any thread.
#[derive(Clone, Debug)]
pub struct Counter {
    value: MetricValue,
}

impl Counter {
    pub(crate) fn new(value: MetricValue) -> Self {
        Counter { value }
    }

    /// A counter nobody reads, for hosts that take no metrics.
    pub(crate) fn detached() -> Self {
        Counter { value: RArc::new(AtomicU64::new(0)) }
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A gauge for one combination of labels, holding a signed integer.
#[derive(Clone, Debug)]
pub struct Gauge {
    value: MetricValue,
}

impl Gauge {
    pub(crate) fn new(value: MetricValue) -> Self {
        Gauge { value }
    }

    pub(crate) fn detached() -> Self {
        Gauge { value: RArc::new(AtomicU64::new(0)) }
    }

    /// Sets the value.
    pub fn set(&self, value: i64) {
        self.value.store(value as u64, Ordering::Relaxed);
    }

    /// Adds `delta` (which may be negative).
    pub fn add(&self, delta: i64) {
        self.value.fetch_add(delta as u64, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed) as i64
    }
}

/// Whether `name` may name a metric: `[a-z][a-z0-9_]*`, at most 64 bytes.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The metric families of one plugin instance, as the host keeps them: the listener and
/// the testkit both register through it and read samples from it.
#[derive(Default)]
pub struct MetricRegistry {
    families: Mutex<Vec<Arc<FamilyEntry>>>,
}

/// Label combinations one family may have: a plugin that makes a label of client input
/// must not grow the host without bound.
pub const MAX_LABEL_SETS_PER_FAMILY: usize = 1024;

struct FamilyEntry {
    name: String,
    help: String,
    kind: MetricKind,
    label_names: Vec<String>,
    values: Mutex<Vec<(Vec<String>, MetricValue)>>,
}

/// One family's values at the moment it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilySample {
    /// The name the plugin registered (without the `rgap_plugin_<kind>_` prefix).
    pub name: String,
    /// Its help text.
    pub help: String,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// Its label names.
    pub label_names: Vec<String>,
    /// Each combination of label values with its value (gauges as signed integers).
    pub values: Vec<(Vec<String>, i64)>,
}

impl MetricRegistry {
    /// Registers a family; registering the same name again with the same shape returns the
    /// same family (a re-created instance keeps its counts).
    pub fn register(&self, desc: &MetricDesc<'_>) -> Result<MetricFamilyBox, PluginError> {
        let name = desc.name.as_str();
        if !is_valid_metric_name(name) {
            return Err(PluginError::failed(format!(
                "metric name {name:?}: use lowercase letters, digits and _, starting with a letter"
            )));
        }
        if desc.kind != MetricKind::COUNTER && desc.kind != MetricKind::GAUGE {
            return Err(PluginError::failed(format!("metric {name}: unknown kind")));
        }
        let label_names: Vec<String> =
            desc.label_names.iter().map(|label| label.as_str().to_owned()).collect();
        for label in &label_names {
            if !is_valid_metric_name(label) || label == "output" {
                return Err(PluginError::failed(format!(
                    "metric {name}: label {label:?} is not allowed (lowercase letters, digits, _; \
                     `output` is the host's)"
                )));
            }
        }
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = families.iter().find(|family| family.name == name) {
            if existing.kind != desc.kind || existing.label_names != label_names {
                return Err(PluginError::failed(format!(
                    "metric {name} is already registered with another kind or labels"
                )));
            }
            return Ok(family_box(existing.clone()));
        }
        let entry = Arc::new(FamilyEntry {
            name: name.to_owned(),
            help: desc.help.as_str().to_owned(),
            kind: desc.kind,
            label_names,
            values: Mutex::new(Vec::new()),
        });
        families.push(entry.clone());
        Ok(family_box(entry))
    }

    /// Every family with its current values, in registration order.
    pub fn sample(&self) -> Vec<FamilySample> {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner()).clone();
        families
            .iter()
            .map(|family| {
                let values = family.values.lock().unwrap_or_else(|e| e.into_inner());
                FamilySample {
                    name: family.name.clone(),
                    help: family.help.clone(),
                    kind: family.kind,
                    label_names: family.label_names.clone(),
                    values: values
                        .iter()
                        .map(|(labels, value)| {
                            (labels.clone(), value.load(Ordering::Relaxed) as i64)
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

fn family_box(entry: Arc<FamilyEntry>) -> MetricFamilyBox {
    MetricFamily_TO::from_ptr(RArc::new(SharedFamily(entry)), TD_Opaque)
}

#[derive(Clone)]
struct SharedFamily(Arc<FamilyEntry>);

impl MetricFamily for SharedFamily {
    fn with_labels(&self, label_values: RSlice<'_, RStr<'_>>) -> RResult<MetricValue, PluginError> {
        let family = &self.0;
        if label_values.len() != family.label_names.len() {
            return RResult::RErr(PluginError::failed(format!(
                "metric {}: {} label value(s) given for {} label(s)",
                family.name,
                label_values.len(),
                family.label_names.len()
            )));
        }
        let mut values = family.values.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, value)) = values.iter().find(|(labels, _)| {
            labels.iter().zip(label_values.iter()).all(|(a, b)| a == b.as_str())
        }) {
            return RResult::ROk(value.clone());
        }
        if values.len() >= MAX_LABEL_SETS_PER_FAMILY {
            return RResult::RErr(PluginError::failed(format!(
                "metric {}: more than {MAX_LABEL_SETS_PER_FAMILY} label combinations",
                family.name
            )));
        }
        let value = RArc::new(AtomicU64::new(0));
        let labels = label_values.iter().map(|value| value.as_str().to_owned()).collect();
        values.push((labels, value.clone()));
        RResult::ROk(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_hold_negative_values_and_counters_add() {
        let gauge = Gauge::detached();
        gauge.set(-5);
        gauge.add(2);
        assert_eq!(gauge.get(), -3);
        let counter = Counter::detached();
        counter.inc();
        counter.add(41);
        assert_eq!(counter.get(), 42);
    }

    fn desc<'a>(name: &'a str, kind: MetricKind, labels: &'a [RStr<'a>]) -> MetricDesc<'a> {
        MetricDesc {
            name: RStr::from_str(name),
            help: RStr::from_str("help"),
            kind,
            label_names: RSlice::from_slice(labels),
        }
    }

    #[test]
    fn the_registry_samples_what_plugins_update() {
        let registry = MetricRegistry::default();
        let labels = [RStr::from_str("rcode")];
        let family =
            registry.register(&desc("queries_total", MetricKind::COUNTER, &labels)).unwrap();
        let noerror = Counter::new(
            family.with_labels(RSlice::from_slice(&[RStr::from_str("NOERROR")])).unwrap(),
        );
        noerror.add(3);
        // The same labels give the same value; registering again gives the same family.
        let again =
            registry.register(&desc("queries_total", MetricKind::COUNTER, &labels)).unwrap();
        Counter::new(again.with_labels(RSlice::from_slice(&[RStr::from_str("NOERROR")])).unwrap())
            .inc();
        let samples = registry.sample();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].values, [(vec!["NOERROR".to_owned()], 4)]);
        assert!(registry.register(&desc("queries_total", MetricKind::GAUGE, &labels)).is_err());
        assert!(registry.register(&desc("Bad-Name", MetricKind::GAUGE, &[])).is_err());
        let output_label = [RStr::from_str("output")];
        assert!(registry.register(&desc("x", MetricKind::GAUGE, &output_label)).is_err());
        assert!(family.with_labels(RSlice::from_slice(&[])).is_err(), "wrong number of labels");
    }

    #[test]
    fn metric_names_are_prometheus_safe() {
        for name in ["queries_total", "a", "writes2_total"] {
            assert!(is_valid_metric_name(name), "{name}");
        }
        for name in ["", "Queries", "1x", "a-b", "a b", "a:b"] {
            assert!(!is_valid_metric_name(name), "{name:?}");
        }
    }
}
