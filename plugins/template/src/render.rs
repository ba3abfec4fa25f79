//! The template and what it sees: a compiled minijinja template (Jinja2 syntax, strict
//! undefined, no auto-escaping, Ansible's whitespace rules) and the context built from the
//! groups: `groups` keyed by integer id, each `{id, ready, members}`, with members sorted by
//! address, plus `now`.
//!
//! Errors name the template file and the line, so an operator can go straight to it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use rgap_plugin_api::{GroupSnapshot, MemberList};
use serde::Serialize;

/// The template's name inside its environment (there is only ever one).
const NAME: &str = "template";

/// A compiled template and where it came from.
pub(crate) struct Template {
    path: PathBuf,
    env: Environment<'static>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Template {
    /// Parses `text`, read from `path`; a syntax error names the file and the line.
    pub fn compile(path: &Path, text: String) -> Result<Template, String> {
        let mut env = Environment::new();
        // Strict: a misspelt name or a group that does not exist is an error, never an
        // empty string in a load balancer's config.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Config files, not HTML.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        // As Ansible's template module, which operators know: a block tag's own line break
        // is dropped, and the file's last line break is kept.
        env.set_trim_blocks(true);
        env.set_keep_trailing_newline(true);
        // Source excerpts in errors are built here from the span; no need to keep more.
        env.set_debug(false);
        match env.add_template_owned(NAME, text.clone()) {
            Ok(()) => Ok(Template { path: path.to_owned(), env }),
            Err(error) => Err(format!("spec.source: {}", describe(&error, path, &text))),
        }
    }

    /// The template file.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renders with `groups` at `now`; an error names the file and the line.
    pub fn render(&self, groups: &[GroupCopy], now: SystemTime) -> Result<String, String> {
        let template = self.env.get_template(NAME).map_err(|e| e.to_string())?;
        let context = Context {
            groups: groups.iter().map(|group| (group.id, group.view())).collect(),
            now: rfc3339(now),
        };
        template.render(&context).map_err(|error| {
            let source = template.source();
            describe(&error, &self.path, source)
        })
    }
}

/// "path line N: kind: detail (at `excerpt`)".
fn describe(error: &minijinja::Error, path: &Path, source: &str) -> String {
    let mut text = path.display().to_string();
    if let Some(line) = error.line() {
        text.push_str(&format!(" line {line}"));
    }
    text.push_str(&format!(": {}", error.kind()));
    if let Some(detail) = error.detail() {
        text.push_str(&format!(": {detail}"));
    }
    let excerpt = error.range().and_then(|range| source.get(range));
    if let Some(excerpt) = excerpt.filter(|e| !e.is_empty() && e.len() <= 200 && !e.contains('\n'))
    {
        text.push_str(&format!(" (at `{excerpt}`)"));
    }
    text
}

/// The state of one group kept for the renderer: its member list is shared with the
/// listener (a reference count), not copied.
#[derive(Debug, Clone)]
pub(crate) struct GroupCopy {
    pub id: u64,
    pub ready: bool,
    pub members: MemberList,
}

impl GroupCopy {
    pub fn of(group: &GroupSnapshot<'_>) -> GroupCopy {
        GroupCopy { id: group.id, ready: group.ready, members: group.share_members() }
    }

    fn view(&self) -> GroupView {
        let mut members: Vec<(IpAddr, i64)> =
            self.members.iter().map(|m| (m.ip(), m.expires_at_unix_us)).collect();
        // Numeric order (10.0.0.2 before 10.0.0.10), IPv4 before IPv6.
        members.sort_unstable();
        GroupView {
            id: self.id,
            ready: self.ready,
            members: members
                .into_iter()
                .map(|(ip, expires)| MemberView {
                    address: ip.to_string(),
                    expires_at: rfc3339(unix_us(expires)),
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct Context {
    groups: BTreeMap<u64, GroupView>,
    now: String,
}

#[derive(Serialize)]
struct GroupView {
    id: u64,
    ready: bool,
    members: Vec<MemberView>,
}

#[derive(Serialize)]
struct MemberView {
    address: String,
    expires_at: String,
}

fn unix_us(micros: i64) -> SystemTime {
    if micros >= 0 {
        UNIX_EPOCH + Duration::from_micros(micros as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
    }
}

/// RFC 3339 in UTC to the second ("2026-11-30T11:34:24Z"): a config file's comment has no
/// use for fractions, and whole seconds keep the text stable between renders.
fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::{RArc, RVec};
    use rgap_plugin_api::Member;

    fn member(ip: &str, expires_at_unix_us: i64) -> Member {
        let address = match ip.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        Member { address, expires_at_unix_us }
    }

    fn group(id: u64, ready: bool, members: &[Member]) -> GroupCopy {
        GroupCopy { id, ready, members: RArc::new(members.iter().copied().collect::<RVec<_>>()) }
    }

    fn compile(text: &str) -> Result<Template, String> {
        Template::compile(Path::new("/etc/t.j2"), text.to_owned())
    }

    /// 2023-11-14T22:13:20Z, plus a fraction that is not shown.
    const T: i64 = 1_700_000_000_123_456;

    #[test]
    fn groups_are_keyed_by_integer_and_members_sorted_numerically() {
        let template = compile(
            "{% for m in groups[1000].members %}{{ m.address }} {{ m.expires_at }}\n{% endfor %}\
             {{ groups[2000].id }} {{ groups[2000].ready }} {{ groups[2000].members|length }}\n\
             {% for id, g in groups|items %}{{ id }},{% endfor %}\n{{ now }}\n",
        )
        .unwrap();
        let groups = [
            group(2000, false, &[]),
            group(
                1000,
                true,
                &[
                    member("10.0.0.10", T),
                    member("2001:db8::1", T),
                    member("10.0.0.2", T + 1_000_000),
                ],
            ),
        ];
        let text = template.render(&groups, unix_us(T)).unwrap();
        // Booleans print as in Jinja2; the line break after a block tag is dropped.
        assert_eq!(
            text,
            "10.0.0.2 2023-11-14T22:13:21Z\n10.0.0.10 2023-11-14T22:13:20Z\n\
             2001:db8::1 2023-11-14T22:13:20Z\n2000 False 0\n1000,2000,2023-11-14T22:13:20Z\n"
        );
    }

    #[test]
    fn block_lines_vanish_and_the_last_line_break_stays() {
        let template = compile("a\n{% if true %}\nb\n{% endif %}\nc\n").unwrap();
        assert_eq!(template.render(&[], SystemTime::now()).unwrap(), "a\nb\nc\n");
        // No HTML escaping, even for a name ending in .html.
        let template = Template::compile(Path::new("x.html"), "{{ '<&>' }}".into()).unwrap();
        assert_eq!(template.render(&[], SystemTime::now()).unwrap(), "<&>");
    }

    #[test]
    fn a_syntax_error_names_the_file_and_the_line() {
        let error = compile("ok\nok\n{{ foo bar }}\n").unwrap_err();
        assert!(error.starts_with("spec.source: /etc/t.j2 line 3: syntax error: "), "{error}");
        let error = compile("{% for x in y %}\n\n").unwrap_err();
        assert!(error.starts_with("spec.source: /etc/t.j2 line "), "{error}");
    }

    #[test]
    fn an_undefined_name_or_group_is_a_render_error_with_its_line() {
        let template = compile("a\n{{ groups[1000].id }}\n{{ grups }}\n").unwrap();
        let groups = [group(1000, true, &[])];
        let error = template.render(&groups, SystemTime::now()).unwrap_err();
        assert!(error.starts_with("/etc/t.j2 line 3: undefined value"), "{error}");
        let template = compile("a\nb\n{% for m in groups[2000].members %}{% endfor %}").unwrap();
        let error = template.render(&groups, SystemTime::now()).unwrap_err();
        assert!(error.starts_with("/etc/t.j2 line 3: undefined value"), "{error}");
    }
}
