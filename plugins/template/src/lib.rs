//! `template`: keeps any config file (an HAProxy backend, an nginx upstream) rendered from
//! the groups with a Jinja2 template, checks each new version with the consumer's own
//! checker before it replaces the old one, and tells the consumer to reload.
//!
//! The delivery thread only notices membership changes of the groups the template uses
//! (by revision: refreshes cost nothing) and hands shared copies of them to a [`worker`]
//! thread, which renders ([`render`]), writes a candidate and installs it ([`install`]),
//! running the commands ([`run`]) around that. Every check that needs no side effect is in
//! [`spec::validate_spec`].

mod install;
mod render;
mod run;
mod spec;
mod worker;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use rgap_plugin_api::{export_output, BoxError, GroupSnapshot, HostHandle, OutputPlugin};

use render::GroupCopy;
use spec::TemplateSpec;
use worker::Worker;

/// The directory that relative `source` and `destination` are taken from: the listener
/// config file's directory (an rgap too old to say means the working directory).
fn base_dir(host: &HostHandle) -> Result<PathBuf, BoxError> {
    match host.config_dir() {
        Some(dir) => Ok(dir),
        None => std::env::current_dir().map_err(|e| {
            format!("cannot find the directory to resolve relative paths in: {e}").into()
        }),
    }
}

/// `(id, membership_revision, ready)` of each group the template uses, in order.
type Revisions = Vec<(u64, u64, bool)>;

struct TemplateOutput {
    destination: PathBuf,
    /// The groups the template uses; `None`: every group.
    groups: Option<BTreeSet<u64>>,
    /// The revisions at the last snapshot; unchanged means there is nothing to render.
    revisions: Option<Revisions>,
    /// Why the destination is not being rendered, as last logged.
    waiting: Option<String>,
    worker: Worker,
}

impl OutputPlugin for TemplateOutput {
    const KIND: &'static str = "template";
    const DESCRIPTION: &'static str =
        "Renders a config file from a Jinja2 template, checks it, replaces it atomically, reloads";
    // Snapshots only: events are answered without entering the plugin.
    const WANTS_EVENTS: bool = false;
    type Spec = TemplateSpec;

    fn validate(spec: &TemplateSpec, host: &HostHandle) -> Result<(), BoxError> {
        spec::validate_spec(spec.clone(), &base_dir(host)?).map(drop)
    }

    fn create(spec: TemplateSpec, host: HostHandle) -> Result<Self, BoxError> {
        let job = spec::validate_spec(spec, &base_dir(&host)?)?;
        let destination = job.destination.clone();
        let groups = job.groups.clone();
        let worker = Worker::spawn(job, host)?;
        Ok(TemplateOutput { destination, groups, revisions: None, waiting: None, worker })
    }

    fn on_snapshot(&mut self, groups: &[GroupSnapshot<'_>]) -> Result<(), BoxError> {
        let (used, unknown) = self.used(groups);
        let revisions: Revisions =
            used.iter().map(|g| (g.id, g.membership_revision, g.ready)).collect();
        if self.revisions.as_ref() == Some(&revisions) {
            return Ok(());
        }
        self.revisions = Some(revisions);
        let not_ready: Vec<u64> = used.iter().filter(|g| !g.ready).map(|g| g.id).collect();
        let waiting = if !unknown.is_empty() {
            Some(format!("group(s) {} are not configured in the listener", ids(&unknown)))
        } else if !not_ready.is_empty() {
            Some(format!("group(s) {} not ready yet", ids(&not_ready)))
        } else {
            None
        };
        match waiting {
            None => {
                if self.waiting.take().is_some() {
                    tracing::info!(
                        "every group is ready: rendering {}",
                        self.destination.display()
                    );
                }
                self.worker.submit(used.iter().map(|g| GroupCopy::of(g)).collect());
            }
            Some(why) if self.waiting.as_ref() != Some(&why) => {
                let shown = self.destination.display();
                if unknown.is_empty() {
                    tracing::info!("not rendering {shown} yet: {why}");
                } else {
                    tracing::warn!("not rendering {shown}: {why}");
                }
                self.waiting = Some(why);
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<(), BoxError> {
        Ok(self.worker.stop()?)
    }
}

impl TemplateOutput {
    /// The groups the template uses, in id order, and the ids it names that do not exist.
    fn used<'a, 'b>(
        &self,
        groups: &'a [GroupSnapshot<'b>],
    ) -> (Vec<&'a GroupSnapshot<'b>>, Vec<u64>) {
        match &self.groups {
            None => {
                let mut used: Vec<_> = groups.iter().collect();
                used.sort_unstable_by_key(|g| g.id);
                (used, vec![])
            }
            Some(wanted) => {
                let index: HashMap<u64, &GroupSnapshot<'_>> =
                    groups.iter().filter(|g| wanted.contains(&g.id)).map(|g| (g.id, g)).collect();
                let unknown = wanted.iter().filter(|id| !index.contains_key(id)).copied().collect();
                (wanted.iter().filter_map(|id| index.get(id).copied()).collect(), unknown)
            }
        }
    }
}

fn ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

export_output!(TemplateOutput);
