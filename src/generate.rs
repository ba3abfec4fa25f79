//! Shell completions and man pages, generated from the clap definition of the command line.
//!
//! Both come from the same `clap::Command` that parses arguments, so they cannot drift from it:
//! `rgap completions <shell>` prints a completion script, and `rgap manpages <dir>` writes
//! `rgap.1` and one page per subcommand (`rgap-agent.1`, ...); the Debian package ships both
//! (`packaging/build-deb.sh`).

use std::path::{Path, PathBuf};

use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};

#[derive(clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to print a completion script for
    shell: Shell,
}

#[derive(clap::Args)]
pub(crate) struct ManpagesArgs {
    /// Directory to write the pages into (created if missing)
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

/// The completion script for `args.shell`. Built in memory because clap_complete panics when
/// its writer fails, and stdout may be a closed pipe.
pub(crate) fn completions(args: &CompletionsArgs, mut command: clap::Command) -> Vec<u8> {
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, name, &mut script);
    script
}

/// Writes one roff page per command into `args.dir`: the top-level command, with the
/// environment, files and cross references that clap does not know, and each subcommand.
pub(crate) fn man_pages(args: &ManpagesArgs, command: clap::Command) -> Result<(), String> {
    let failed =
        |what: &str, path: &Path, e: std::io::Error| format!("{what} {}: {e}", path.display());
    std::fs::create_dir_all(&args.dir).map_err(|e| failed("cannot create", &args.dir, e))?;
    clap_mangen::generate_to(command.clone(), &args.dir)
        .map_err(|e| failed("cannot write man pages into", &args.dir, e))?;

    let mut command = command.disable_help_subcommand(true);
    command.build();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page).expect("writing to memory");
    page.extend_from_slice(top_page_sections(&command).to_roff().as_bytes());
    let path = args.dir.join(format!("{}.1", command.get_name()));
    std::fs::write(&path, page).map_err(|e| failed("cannot write", &path, e))
}

/// ENVIRONMENT, FILES and SEE ALSO of `rgap(1)`. Paths are those of the Debian package.
fn top_page_sections(command: &clap::Command) -> Roff {
    let mut roff = Roff::new();
    let item = |roff: &mut Roff, term: &str, text: &str| {
        roff.control("TP", []).text([bold(term)]).text([roman(text)]);
    };
    roff.control("SH", ["ENVIRONMENT"]);
    item(
        &mut roff,
        "RUST_LOG",
        "Log filter, e.g. debug, warn or rgap::output=debug (default info). Logs go to stderr.",
    );
    item(
        &mut roff,
        "RGAP_PLUGIN_PATH",
        "Colon-separated directories searched for output plugins first, before the plugin_dirs of the \
         configuration, the directory of the rgap executable and /usr/lib/rgap/plugins.",
    );
    item(
        &mut roff,
        "RGAP_GROUP, RGAP_ADDRESS, RGAP_PSK, RGAP_INTERVAL, RGAP_DST, ...",
        "Settings of rgap agent: see rgap-agent(1).",
    );

    roff.control("SH", ["FILES"]);
    item(&mut roff, "/etc/rgap/rgap.yaml", "Configuration of the listener run by rgap.service.");
    item(&mut roff, "/etc/rgap/agent-NAME.env", "Settings of the agent run by rgap-agent@NAME.service (example: /etc/rgap/agent.env.example).");
    item(
        &mut roff,
        "/usr/lib/rgap/plugins/librgap_output_KIND.so",
        "Output plugins; rgap plugins lists them.",
    );
    item(
        &mut roff,
        "/usr/lib/systemd/system/rgap.service, rgap-agent@.service",
        "The systemd units; each sandbox setting says what to relax when an output needs more.",
    );

    roff.control("SH", ["SEE ALSO"]);
    let pages: Vec<String> = command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .map(|sub| format!("{}-{}(1)", command.get_name(), sub.get_name()))
        .chain(["systemctl(1)".to_owned(), "/usr/share/doc/rgap/README.md".to_owned()])
        .collect();
    roff.text([roman(pages.join(", "))]);
    roff
}
