//! Shell completions and man pages, generated from the clap definition of the command line.
//!
//! Both come from the same `clap::Command` that parses arguments, so they cannot drift from it:
//! `rgap completions <shell>` prints a completion script, and `rgap manpages <dir>` writes
//! `rgap.1` and one page per subcommand (`rgap-agent.1`, ...); the Debian package ships both
//! (`packaging/build-deb.sh`).

use std::path::{Path, PathBuf};

use clap_complete::Shell;

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

/// Writes one roff page per command into `args.dir`: the top-level command and each subcommand.
pub(crate) fn man_pages(args: &ManpagesArgs, command: clap::Command) -> Result<(), String> {
    let failed =
        |what: &str, dir: &Path, e: std::io::Error| format!("{what} {}: {e}", dir.display());
    std::fs::create_dir_all(&args.dir).map_err(|e| failed("cannot create", &args.dir, e))?;
    clap_mangen::generate_to(command, &args.dir)
        .map_err(|e| failed("cannot write man pages into", &args.dir, e))
}
