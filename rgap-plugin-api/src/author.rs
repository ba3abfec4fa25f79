//! The plugin author's side: an ordinary Rust trait, [`OutputPlugin`], and the glue that
//! [`export_output!`](crate::export_output) instantiates inside the plugin. The glue decodes
//! the spec, routes the plugin's `tracing` events to the host, and turns every panic into a
//! [`PluginError`] so that no panic ever crosses the FFI boundary (that would abort rgap).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RSlice, RStr};
use serde::de::DeserializeOwned;

use crate::abi::{HostBox, OutputBox, Output_TO};
use crate::log_bridge;
use crate::metrics::{Counter, Gauge, MetricDesc, MetricFamilyBox, MetricKind, MetricValue};
use crate::types::{Event, GroupSnapshot, HostStats, LogLevel, Member, PluginError};

/// The error type plugin methods return; any error converts into it with `?`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a plugin author implements. All methods but `create` have do-nothing defaults.
///
/// The host calls an instance from one thread at a time, in order. Methods should return
/// promptly: the host never waits for a slow plugin (its events collapse into a `Resync`),
/// but long work belongs on the plugin's own threads.
pub trait OutputPlugin: Sized + Send + 'static {
    /// The `kind` operators write in YAML. The file must be named `librgap_output_<KIND>.so`.
    const KIND: &'static str;
    /// One line shown by `rgap plugins`.
    const DESCRIPTION: &'static str;
    /// The `spec` mapping from YAML. Use `#[serde(deny_unknown_fields)]` so a typo is an
    /// error, and `#[serde(default)]` on optional keys: an absent or null `spec` is decoded
    /// from an empty mapping.
    type Spec: DeserializeOwned;

    /// Builds an instance; an error here stops rgap at start with the message shown.
    fn create(spec: Self::Spec, host: HostHandle) -> Result<Self, BoxError>;

    /// Checks a decoded spec as `create` would, with no side effect: bind nothing, write
    /// nothing, start no thread (`rgap validate` runs it while the listener holds the ports,
    /// and a reload runs it before anything changes). Decoding the spec (unknown keys,
    /// types) has already happened; the default accepts every spec that decodes. Whatever
    /// `create` can reject without touching the world belongs here too.
    fn validate(_spec: &Self::Spec, _host: &HostHandle) -> Result<(), BoxError> {
        Ok(())
    }

    /// Whether this plugin uses [`OutputPlugin::on_event`]. One that works from snapshots
    /// alone sets it to `false`: the host's per-event calls are then answered without
    /// entering the plugin (no panic guard, no log scope), which counts when 100 000 members
    /// join at once.
    const WANTS_EVENTS: bool = true;

    /// A membership change.
    fn on_event(&mut self, _event: &Event) -> Result<(), BoxError> {
        Ok(())
    }

    /// The state of every group after the preceding events.
    fn on_snapshot(&mut self, _groups: &[GroupSnapshot<'_>]) -> Result<(), BoxError> {
        Ok(())
    }

    /// Shutdown: finish running work and release resources.
    fn stop(&mut self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// The host as a plugin sees it: logging goes through `tracing` as usual; this handle gives
/// the rest, and lets the plugin's own threads log under this instance's name.
#[derive(Clone)]
pub struct HostHandle {
    host: HostBox,
    dispatch: tracing::Dispatch,
}

impl HostHandle {
    fn new(host: HostBox) -> Self {
        let dispatch = log_bridge::dispatch_for(host.clone());
        HostHandle { host, dispatch }
    }

    /// Listener counters at this moment.
    pub fn stats(&self) -> HostStats {
        self.host.stats()
    }

    /// This instance's name in logs, e.g. `hostsfile#2`.
    pub fn instance_name(&self) -> String {
        self.host.instance_name().to_string()
    }

    /// Runs `f` with `tracing` events attributed to this instance. Wrap the body of every
    /// thread the plugin spawns in it; calls from the host are wrapped already.
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        tracing::dispatcher::with_default(&self.dispatch, f)
    }

    /// Writes a log line directly, bypassing `tracing`.
    pub fn log(&self, level: LogLevel, message: &str) {
        self.host.log(level, RStr::from_str("plugin"), RStr::from_str(message));
    }

    /// The directory of the listener's config file, if the host says (hosts before 0.1.1
    /// do not).
    pub fn config_dir(&self) -> Option<PathBuf> {
        let dir = self.host.config_dir();
        (!dir.is_empty()).then(|| PathBuf::from(dir.as_str()))
    }

    /// `path` as the operator meant it: a relative path in a spec is relative to the config
    /// file's directory (or, if the host does not say, to the working directory).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match self.config_dir() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// Extra facts the host knows about one member (see [`crate::Host::member_attributes`]).
    pub fn member_attributes(&self, group: u64, member: &Member) -> Vec<(String, String)> {
        self.host
            .member_attributes(group, member)
            .into_iter()
            .map(|pair| (pair.0.into_string(), pair.1.into_string()))
            .collect()
    }

    /// Registers a counter family, exposed as `rgap_plugin_<kind>_<name>`; `name` should end
    /// in `_total`. A family the host refuses (bad name, an older host) is logged once and
    /// its counters still work, unread, so metrics never stop a plugin.
    pub fn counter(&self, name: &str, help: &str, label_names: &[&str]) -> CounterFamily {
        CounterFamily { family: self.register(name, help, MetricKind::COUNTER, label_names) }
    }

    /// Registers a gauge family, exposed as `rgap_plugin_<kind>_<name>`.
    pub fn gauge(&self, name: &str, help: &str, label_names: &[&str]) -> GaugeFamily {
        GaugeFamily { family: self.register(name, help, MetricKind::GAUGE, label_names) }
    }

    fn register(
        &self,
        name: &str,
        help: &str,
        kind: MetricKind,
        label_names: &[&str],
    ) -> Option<MetricFamilyBox> {
        let labels: Vec<RStr<'_>> = label_names.iter().map(|label| RStr::from_str(label)).collect();
        let desc = MetricDesc {
            name: RStr::from_str(name),
            help: RStr::from_str(help),
            kind,
            label_names: RSlice::from_slice(&labels),
        };
        match self.host.register_metric(desc) {
            RResult::ROk(family) => Some(family),
            RResult::RErr(error) => {
                self.in_scope(|| tracing::debug!("metric {name} is not exposed: {error}"));
                None
            }
        }
    }
}

/// A counter family registered through [`HostHandle::counter`].
#[derive(Clone)]
pub struct CounterFamily {
    family: Option<MetricFamilyBox>,
}

impl CounterFamily {
    /// The counter for these label values (one per label name, in order). Call once per
    /// combination, up front, and keep it: updating it is then one atomic add.
    pub fn with_labels(&self, label_values: &[&str]) -> Counter {
        value_for(&self.family, label_values).map_or_else(Counter::detached, Counter::new)
    }
}

/// A gauge family registered through [`HostHandle::gauge`].
#[derive(Clone)]
pub struct GaugeFamily {
    family: Option<MetricFamilyBox>,
}

impl GaugeFamily {
    /// The gauge for these label values (one per label name, in order).
    pub fn with_labels(&self, label_values: &[&str]) -> Gauge {
        value_for(&self.family, label_values).map_or_else(Gauge::detached, Gauge::new)
    }
}

fn value_for(family: &Option<MetricFamilyBox>, label_values: &[&str]) -> Option<MetricValue> {
    let family = family.as_ref()?;
    let values: Vec<RStr<'_>> = label_values.iter().map(|value| RStr::from_str(value)).collect();
    family.with_labels(RSlice::from_slice(&values)).into_result().ok()
}

thread_local! {
    /// Set while this thread is inside a boundary call, where a panic is caught and reported.
    static IN_BOUNDARY: Cell<bool> = const { Cell::new(false) };
    /// The message and location of the last panic on this thread, recorded by the hook.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs this plugin's panic hook (a cdylib has its own std, so its own hook): it records
/// the message with its location for the boundary to report, and logs panics on the
/// plugin's own threads, which no boundary catches, at a bounded rate: a panic that input
/// can trigger must not flood the log.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // With the testkit, the plugin shares the test's process: a failing assertion must
        // still be reported the usual way.
        #[cfg(feature = "testkit")]
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = format!("{} at {}", payload_text(info.payload()), location_text(info));
            if IN_BOUNDARY.with(Cell::get) {
                LAST_PANIC.with(|last| *last.borrow_mut() = Some(message));
                return;
            }
            #[cfg(feature = "testkit")]
            previous(info);
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("unnamed");
            match THREAD_PANIC_LOG.admit(unix_seconds()) {
                Admit::Log { suppressed } => {
                    if suppressed > 0 {
                        tracing::error!(
                            "{suppressed} more panic(s) on plugin threads were not logged in the \
                             last {}s",
                            PANIC_LOG_WINDOW_SECS
                        );
                    }
                    tracing::error!("plugin thread {name} panicked: {message}");
                }
                Admit::Suppress => {}
            }
        }));
    });
}

/// Panics on plugin threads logged per window; the rest are counted and reported as one
/// line when the next window opens.
const PANIC_LOGS_PER_WINDOW: u64 = 10;
const PANIC_LOG_WINDOW_SECS: u64 = 60;

static THREAD_PANIC_LOG: RateLimit = RateLimit::new(PANIC_LOGS_PER_WINDOW, PANIC_LOG_WINDOW_SECS);

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

/// Whether one more line may be logged now.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// Log it, after saying how many were held back since the last line.
    Log {
        suppressed: u64,
    },
    Suppress,
}

/// At most `per_window` lines per `window_secs`, lock-free (a panic hook may run on any
/// thread, even while another panics).
struct RateLimit {
    per_window: u64,
    window_secs: u64,
    window_start: AtomicU64,
    logged: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    const fn new(per_window: u64, window_secs: u64) -> Self {
        RateLimit {
            per_window,
            window_secs,
            window_start: AtomicU64::new(0),
            logged: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    fn admit(&self, now_secs: u64) -> Admit {
        let start = self.window_start.load(Ordering::Relaxed);
        if now_secs >= start + self.window_secs
            && self
                .window_start
                .compare_exchange(start, now_secs, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.logged.store(0, Ordering::Relaxed);
        }
        if self.logged.fetch_add(1, Ordering::Relaxed) < self.per_window {
            Admit::Log { suppressed: self.suppressed.swap(0, Ordering::Relaxed) }
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            Admit::Suppress
        }
    }
}

fn location_text(info: &std::panic::PanicHookInfo<'_>) -> String {
    info.location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_else(|| "unknown location".to_owned())
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs `f` inside the boundary: tracing goes to `dispatch`, a panic becomes an error.
fn guarded<R>(
    dispatch: &tracing::Dispatch,
    f: impl FnOnce() -> Result<R, BoxError>,
) -> Result<R, PluginError> {
    let was_inside = IN_BOUNDARY.with(|inside| inside.replace(true));
    // The error is formatted (and dropped) inside the guard too: its `Display`, `source` and
    // `Drop` are plugin code and may panic as well.
    let outcome = tracing::dispatcher::with_default(dispatch, || {
        catch_unwind(AssertUnwindSafe(|| f().map_err(|error| error_chain(&*error))))
    });
    IN_BOUNDARY.with(|inside| inside.set(was_inside));
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(PluginError::failed(message)),
        Err(payload) => {
            let recorded = LAST_PANIC.with(|last| last.borrow_mut().take());
            let message = recorded.unwrap_or_else(|| payload_text(&*payload));
            drop_payload(payload);
            Err(PluginError::panicked(message))
        }
    }
}

/// Drops a caught panic's payload without letting a panicking `Drop` of it unwind further
/// (`panic_any` can carry any type); the payload of such a second panic is leaked.
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// An error and its sources on one line: "a: b: c".
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Decodes a spec; absent, empty or null means an empty mapping, so that required keys are
/// reported as missing and optional ones take their defaults. Errors carry the key path.
pub fn decode_spec<S: DeserializeOwned>(spec_yaml: &str) -> Result<S, BoxError> {
    let value: serde_yaml::Value = if spec_yaml.trim().is_empty() {
        serde_yaml::Value::Null
    } else {
        serde_yaml::from_str(spec_yaml)?
    };
    let value = match value {
        serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
        other => other,
    };
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            format!("spec: {inner}").into()
        } else {
            format!("spec.{path}: {inner}").into()
        }
    })
}

/// The `create` entry point, instantiated inside each plugin by `export_output!`.
///
/// Everything runs under `catch_unwind`: this is called from an `extern "C"` function, where
/// an escaping panic would abort the whole listener.
#[doc(hidden)]
pub fn create_entry<P: OutputPlugin>(
    spec_yaml: RStr<'_>,
    host: HostBox,
) -> RResult<OutputBox, PluginError> {
    let spec_text = spec_yaml.as_str();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        install_panic_hook();
        log_bridge::install_global_default(host.clone());
        let handle = HostHandle::new(host);
        let dispatch = handle.dispatch.clone();
        guarded(&dispatch, || {
            let spec = decode_spec::<P::Spec>(spec_text)?;
            P::create(spec, handle)
        })
        .map(|plugin| Output_TO::from_value(Adapter { plugin: Some(plugin), dispatch }, TD_Opaque))
    }));
    match outcome {
        Ok(Ok(output)) => RResult::ROk(output),
        Ok(Err(error)) => RResult::RErr(error),
        Err(payload) => {
            let message = payload_text(&*payload);
            drop_payload(payload);
            RResult::RErr(PluginError::panicked(message))
        }
    }
}

/// Checks a spec without side effects: the `validate` entry point, instantiated inside each
/// plugin by `export_output!`, guarded like `create`.
#[doc(hidden)]
pub fn validate_entry<P: OutputPlugin>(
    spec_yaml: RStr<'_>,
    host: HostBox,
) -> RResult<(), PluginError> {
    let spec_text = spec_yaml.as_str();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        install_panic_hook();
        let handle = HostHandle::new(host);
        let dispatch = handle.dispatch.clone();
        guarded(&dispatch, || {
            let spec = decode_spec::<P::Spec>(spec_text)?;
            P::validate(&spec, &handle)
        })
    }));
    match outcome {
        Ok(result) => result.into(),
        Err(payload) => {
            let message = payload_text(&*payload);
            drop_payload(payload);
            RResult::RErr(PluginError::panicked(message))
        }
    }
}

/// How many calls of each kind entered this plugin file from the host. For tests (the
/// testkit fixture reports them), so they can prove what crossed the boundary.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BoundaryCalls {
    pub events: u64,
    pub snapshots: u64,
}

static EVENT_CALLS: AtomicU64 = AtomicU64::new(0);
static SNAPSHOT_CALLS: AtomicU64 = AtomicU64::new(0);

/// The calls counted so far in this plugin file.
#[doc(hidden)]
pub fn boundary_calls() -> BoundaryCalls {
    BoundaryCalls {
        events: EVENT_CALLS.load(Ordering::Relaxed),
        snapshots: SNAPSHOT_CALLS.load(Ordering::Relaxed),
    }
}

/// Wraps a plugin so that every call from the host is guarded, its drop included.
struct Adapter<P: OutputPlugin> {
    plugin: Option<P>,
    dispatch: tracing::Dispatch,
}

impl<P: OutputPlugin> Adapter<P> {
    fn call(&mut self, f: impl FnOnce(&mut P) -> Result<(), BoxError>) -> RResult<(), PluginError> {
        let Some(plugin) = self.plugin.as_mut() else {
            return RResult::RErr(PluginError::failed("instance was stopped or poisoned"));
        };
        guarded(&self.dispatch, || f(plugin)).into()
    }
}

impl<P: OutputPlugin> crate::abi::Output for Adapter<P> {
    fn on_event(&mut self, event: &Event) -> RResult<(), PluginError> {
        EVENT_CALLS.fetch_add(1, Ordering::Relaxed);
        // Hosts since 0.1.1 make no such call when `wants_events` is false; older ones do.
        if !P::WANTS_EVENTS {
            return RResult::ROk(());
        }
        self.call(|plugin| plugin.on_event(event))
    }

    fn on_snapshot(&mut self, groups: RSlice<'_, GroupSnapshot<'_>>) -> RResult<(), PluginError> {
        SNAPSHOT_CALLS.fetch_add(1, Ordering::Relaxed);
        self.call(|plugin| plugin.on_snapshot(groups.as_slice()))
    }

    fn stop(&mut self) -> RResult<(), PluginError> {
        self.call(|plugin| plugin.stop())
    }
}

impl<P: OutputPlugin> Drop for Adapter<P> {
    fn drop(&mut self) {
        // A panicking destructor must not unwind into the host either.
        let plugin = self.plugin.take();
        let result = guarded(&self.dispatch, move || {
            drop(plugin);
            Ok(())
        });
        if let Err(error) = result {
            tracing::dispatcher::with_default(&self.dispatch, || {
                tracing::error!("dropping the instance failed: {error}");
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ErrorKind;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Spec {
        #[serde(default)]
        interval: Option<String>,
        #[serde(default)]
        nested: Option<Nested>,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        name: String,
    }

    fn spec_error(text: &str) -> String {
        decode_spec::<Spec>(text).unwrap_err().to_string()
    }

    #[test]
    fn absent_empty_or_null_spec_means_defaults() {
        for text in ["", "  \n", "null\n", "~\n"] {
            let spec: Spec = decode_spec(text).unwrap();
            assert_eq!(spec, Spec { interval: None, nested: None }, "{text:?}");
        }
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let message = spec_error("bogus: 1\n");
        assert!(message.starts_with("spec.bogus: unknown field `bogus`"), "{message}");
        let message = spec_error("nested:\n  nam: x\n");
        assert!(message.starts_with("spec.nested.nam: unknown field `nam`"), "{message}");
    }

    #[test]
    fn wrong_types_and_missing_keys_are_named_with_their_path() {
        assert!(spec_error("nested: {}\n").starts_with("spec.nested: missing field `name`"));
        assert!(spec_error("interval: [1]\n").starts_with("spec.interval: invalid type"));
        assert!(spec_error("5\n").starts_with("spec: invalid type: integer"));
        assert!(spec_error("a: [\n").starts_with("did not find expected node content"));
    }

    #[test]
    fn errors_keep_their_sources_on_one_line() {
        let dispatch = tracing::Dispatch::none();
        let error = guarded::<()>(&dispatch, || {
            let cause = std::io::Error::other("disk full");
            Err(Box::new(std::io::Error::other(Wrapper(cause))))
        })
        .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Failed);
        assert_eq!(error.message.as_str(), "cannot save: disk full");
    }

    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("cannot save")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// An error whose `Display` panics: plugin code, so it must be caught too.
    #[derive(Debug)]
    struct BadDisplay;

    impl std::fmt::Display for BadDisplay {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("display exploded")
        }
    }

    impl std::error::Error for BadDisplay {}

    /// A panic payload whose `Drop` panics.
    struct DropBomb;

    impl Drop for DropBomb {
        fn drop(&mut self) {
            panic!("payload drop exploded")
        }
    }

    #[test]
    fn panics_while_reporting_an_error_or_dropping_a_payload_are_caught() {
        let dispatch = tracing::Dispatch::none();
        let error = guarded::<()>(&dispatch, || Err(Box::new(BadDisplay))).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Panicked);
        assert!(error.message.as_str().contains("display exploded"), "{error}");
        let error = guarded::<()>(&dispatch, || std::panic::panic_any(DropBomb)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Panicked);
        assert_eq!(error.message.as_str(), "non-string panic payload");
    }

    #[test]
    fn a_panic_inside_the_boundary_becomes_an_error_with_its_message() {
        let dispatch = tracing::Dispatch::none();
        let error = guarded::<()>(&dispatch, || panic!("boom {}", 42)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Panicked);
        assert!(error.message.as_str().contains("boom 42"), "{error}");
        assert_eq!(guarded(&dispatch, || Ok(7)).unwrap(), 7);
        // The boundary flag is restored, so later panics elsewhere are not misattributed.
        assert!(!IN_BOUNDARY.with(Cell::get));
    }

    /// Counts the events that reach it, and fails each so the caller can tell.
    struct Counting<const WANTS: bool> {
        events: usize,
    }

    impl<const WANTS: bool> OutputPlugin for Counting<WANTS> {
        const KIND: &'static str = "counting";
        const DESCRIPTION: &'static str = "counts events";
        const WANTS_EVENTS: bool = WANTS;
        type Spec = ();

        fn create(_spec: (), _host: HostHandle) -> Result<Self, BoxError> {
            Ok(Counting { events: 0 })
        }

        fn on_event(&mut self, _event: &Event) -> Result<(), BoxError> {
            self.events += 1;
            Err("entered".into())
        }
    }

    fn deliver<const WANTS: bool>() -> (RResult<(), PluginError>, usize) {
        use crate::abi::Output;
        let plugin = Counting::<WANTS> { events: 0 };
        let mut adapter = Adapter { plugin: Some(plugin), dispatch: tracing::Dispatch::none() };
        let result = adapter.on_event(&Event::Ready { group: 1 });
        (result, adapter.plugin.as_ref().map_or(0, |plugin| plugin.events))
    }

    #[test]
    fn thread_panics_are_logged_at_a_bounded_rate_and_the_rest_counted() {
        let limit = RateLimit::new(3, 60);
        let admitted: Vec<Admit> = (0..5).map(|_| limit.admit(1000)).collect();
        assert_eq!(
            admitted[..3],
            [
                Admit::Log { suppressed: 0 },
                Admit::Log { suppressed: 0 },
                Admit::Log { suppressed: 0 }
            ]
        );
        assert_eq!(admitted[3..], [Admit::Suppress, Admit::Suppress]);
        // Still the same window: held back.
        assert_eq!(limit.admit(1059), Admit::Suppress);
        // The next window logs again, first saying how many were held back.
        assert_eq!(limit.admit(1060), Admit::Log { suppressed: 3 });
        assert_eq!(limit.admit(1060), Admit::Log { suppressed: 0 });
    }

    #[test]
    fn events_reach_only_plugins_that_want_them() {
        let (result, seen) = deliver::<true>();
        assert_eq!(seen, 1);
        assert!(result.into_result().unwrap_err().message.as_str().contains("entered"));
        let (result, seen) = deliver::<false>();
        assert_eq!(seen, 0);
        assert!(result.is_ok());
    }
}
