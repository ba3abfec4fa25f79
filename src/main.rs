//! The `rgap` command: a thin shell over `rgap-core`.
//!
//! Parses arguments, checks and converts them into library types with messages that name the
//! flag (or environment variable) at fault, calls the library, and turns any error into one
//! `error: ...` line on stderr and exit code 1.

mod generate;

use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use rgap_core::addrspec::AddrSpec;
use rgap_core::agent::{self, AgentOptions, DEFAULT_DESTINATION};
use rgap_core::psk::Psk;
use tracing_subscriber::EnvFilter;

/// Redundancy Group Announcement Protocol: lets one group of hosts learn the IP addresses of
/// another through HMAC-signed UDP announcements.
#[derive(Parser)]
#[command(name = "rgap", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Announce this node's address to a redundancy group (once, or every --interval)
    Agent(AgentArgs),
    /// Collect announcements and publish group membership through output plugins
    Listener(ListenerArgs),
    /// Print a new random pre-shared key (64 hex characters)
    Genpsk,
    /// List the output plugins found, with their versions, and why any fail to load
    Plugins(PluginsArgs),
    /// Print the rgap version and the plugin API version
    Version,
    /// Print a shell completion script (e.g. `rgap completions bash > /etc/bash_completion.d/rgap`)
    Completions(generate::CompletionsArgs),
    /// Write the man pages (rgap.1 and one per subcommand) into a directory
    Manpages(generate::ManpagesArgs),
}

/// Values are taken as strings and checked here, so that every message names its flag.
#[derive(clap::Args)]
struct AgentArgs {
    /// Redundancy group identifier (unsigned 64-bit integer)
    #[arg(short, long, env = "RGAP_GROUP", allow_negative_numbers = true)]
    group: String,
    /// IP address this node announces to the group
    #[arg(short, long, env = "RGAP_ADDRESS")]
    address: Option<String>,
    /// Pre-shared key, 64 hex characters (see `rgap genpsk`)
    #[arg(short = 'k', long, env = "RGAP_PSK", hide_env_values = true)]
    psk: Option<String>,
    /// Send every INTERVAL (Go duration, e.g. 5s, 1m30s); without it, send once and exit
    // Hyphen values allowed so that "-5s" reaches our parser and gets our message.
    #[arg(short, long, env = "RGAP_INTERVAL", value_name = "INTERVAL", allow_hyphen_values = true)]
    interval: Option<String>,
    /// Destination host:port[@iface|@ip/prefix]; repeat for several (in RGAP_DST: comma-separated)
    #[arg(short, long = "dst", value_name = "DST", default_value = DEFAULT_DESTINATION)]
    #[arg(env = "RGAP_DST", value_delimiter = ',')]
    dst: Vec<String>,
}

#[derive(clap::Args)]
struct ListenerArgs {
    /// Listener configuration (YAML)
    #[arg(short, long, default_value = "rgap.yaml")]
    config: PathBuf,
}

#[derive(clap::Args)]
struct PluginsArgs {
    /// Also search the `plugin_dirs` of this listener configuration
    #[arg(short, long)]
    config: Option<PathBuf>,
}

/// One line for stderr: what went wrong, naming the input at fault.
type CliError = String;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Not `eprintln!`, which panics when stderr is closed.
            let _ = writeln!(std::io::stderr(), "error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by RUST_LOG (default `info`; a bad filter also means `info`).
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes would clutter log files and journald.
        .with_ansi(std::io::stderr().is_terminal())
        // If stderr goes away (a closed pipe, a restarted log collector), log lines are lost
        // but the listener keeps running: tracing's fallback `eprintln!` would panic instead.
        .log_internal_errors(false)
        .init();
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Agent(args) => agent::run(agent_options(args)?).map_err(|e| e.to_string()),
        Command::Listener(args) => rgap_core::listener::run(&args.config).map_err(line),
        Command::Genpsk => {
            let psk = Psk::generate().map_err(line)?;
            print_out(|out| writeln!(out, "{}", psk.to_hex()))
        }
        Command::Plugins(args) => {
            let config_dirs = match &args.config {
                Some(path) => rgap_core::config::Config::load(path).map_err(line)?.plugin_dirs,
                None => Vec::new(),
            };
            let dirs = rgap_core::plugin_host::search_dirs(&config_dirs);
            print_out(|out| rgap_core::plugin_host::write_listing_for(out, &dirs))
        }
        Command::Version => print_out(|out| {
            writeln!(
                out,
                "rgap {} (plugin API {})",
                env!("CARGO_PKG_VERSION"),
                rgap_plugin_api::API_VERSION
            )
        }),
        Command::Completions(args) => {
            print_out(|out| out.write_all(&generate::completions(&args, Cli::command())))
        }
        Command::Manpages(args) => generate::man_pages(&args, Cli::command()),
    }
}

fn line(error: impl Display) -> CliError {
    error.to_string()
}

/// Writes to stdout, reporting a closed pipe as an error instead of panicking like `println!`.
fn print_out(write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<(), CliError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    write(&mut out).and_then(|()| out.flush()).map_err(|e| format!("cannot write to stdout: {e}"))
}

fn agent_options(args: AgentArgs) -> Result<AgentOptions, CliError> {
    Ok(AgentOptions {
        group: parse_group(&args.group)?,
        address: parse_address(args.address.as_deref())?,
        psk: parse_psk(args.psk.as_deref())?,
        interval: args.interval.as_deref().map(parse_interval).transpose()?,
        destinations: args
            .dst
            .iter()
            .map(|d| AddrSpec::parse(d).map_err(|e| format!("--dst: {e}")))
            .collect::<Result<_, _>>()?,
    })
}

fn parse_group(text: &str) -> Result<u64, CliError> {
    text.parse().map_err(|_| format!("--group: {text:?} is not a group number (0 to {})", u64::MAX))
}

/// An absent or empty value counts as missing: an exported-but-empty variable is a mistake.
fn required<'a>(value: Option<&'a str>, name: &str, hint: &str) -> Result<&'a str, CliError> {
    value.filter(|v| !v.is_empty()).ok_or_else(|| format!("{name}: required ({hint})"))
}

fn parse_address(value: Option<&str>) -> Result<IpAddr, CliError> {
    const NAME: &str = "--address/RGAP_ADDRESS";
    let text = required(value, NAME, "the IP address this node announces")?;
    text.parse().map_err(|_| format!("{NAME}: {text:?} is not an IP address"))
}

fn parse_psk(value: Option<&str>) -> Result<Psk, CliError> {
    const NAME: &str = "--psk/RGAP_PSK";
    let text = required(value, NAME, "64 hex characters; make one with `rgap genpsk`")?;
    // The error never echoes the text: it is (nearly) a secret.
    Psk::from_hex(text).map_err(|e| format!("{NAME}: {e}"))
}

fn parse_interval(text: &str) -> Result<std::time::Duration, CliError> {
    let interval = rgap_core::duration::parse(text).map_err(|e| format!("--interval: {e}"))?;
    if interval.is_zero() {
        return Err(format!("--interval: {text:?} must be greater than 0"));
    }
    Ok(interval)
}
