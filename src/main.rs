//! The `rgap` command: a thin shell over `rgap-core`.
//!
//! Parses arguments, checks and converts them into library types with messages that name the
//! flag (or environment variable) at fault, calls the library, and turns any error into one
//! `error: ...` line on stderr and exit code 1.

mod generate;

use std::fmt::Display;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use rgap_core::addrspec::AddrSpec;
use rgap_core::agent::{self, AgentOptions, HealthCheck, DEFAULT_DESTINATION};
use rgap_core::psk::Psk;

/// Redundancy Group Announcement Protocol: lets one group of hosts learn the IP addresses of
/// another through HMAC-signed UDP announcements.
#[derive(Parser)]
#[command(name = "rgap", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text or as one JSON object per line
    #[arg(long, global = true, value_enum, env = "RGAP_LOG_FORMAT", default_value = "text")]
    log_format: LogFormatArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Announce this node's address to a redundancy group (once, or every --interval)
    // Boxed: its many flags would make every other variant as large.
    Agent(Box<AgentArgs>),
    /// Collect announcements and publish group membership through output plugins
    Listener(ListenerArgs),
    /// Print a new random pre-shared key (64 hex characters)
    Genpsk,
    /// List the output plugins found, with their versions, and why any fail to load
    Plugins(PluginsArgs),
    /// Check a listener configuration as `rgap listener` would, without binding or writing
    Validate(ValidateArgs),
    /// Print the rgap version and the plugin API version
    Version,
    /// Ask a running listener who is in each group (over its `http` endpoint)
    Members(MembersArgs),
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
    /// File holding the key (its first key: one per line, # comments), instead of --psk
    #[arg(long, env = "RGAP_PSK_FILE", value_name = "PATH")]
    psk_file: Option<PathBuf>,
    /// Announce only while this shell command passes (exit 0); it runs every --interval
    #[arg(long, env = "RGAP_CHECK", value_name = "CMD")]
    check: Option<String>,
    /// Kill the check (its whole process group) and count a failure after this long [default: 1s]
    #[arg(long, env = "RGAP_CHECK_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    check_timeout: Option<String>,
    /// Passes in a row that make the agent healthy (it starts unhealthy)
    #[arg(
        long,
        env = "RGAP_RISE",
        value_name = "N",
        default_value = "2",
        allow_hyphen_values = true
    )]
    rise: String,
    /// Failures in a row that make the agent unhealthy (it then sends a leave)
    #[arg(
        long,
        env = "RGAP_FALL",
        value_name = "N",
        default_value = "2",
        allow_hyphen_values = true
    )]
    fall: String,
    /// Send one signed leave ("this address has left") to every destination and exit
    #[arg(long)]
    leave: bool,
    /// With --interval: do not send a leave when stopped by SIGTERM or SIGINT
    #[arg(long)]
    no_leave: bool,
}

#[derive(clap::Args)]
struct ListenerArgs {
    /// Listener configuration (YAML)
    #[arg(short, long, default_value = "rgap.yaml")]
    config: PathBuf,
}

#[derive(clap::Args)]
struct ValidateArgs {
    /// Listener configuration (YAML)
    #[arg(short, long, default_value = "rgap.yaml")]
    config: PathBuf,
}

#[derive(clap::Args)]
struct MembersArgs {
    /// Listener configuration whose `http.listen` to ask
    #[arg(short, long, default_value = "rgap.yaml")]
    config: PathBuf,
    /// Base URL of the listener's endpoint instead, e.g. http://127.0.0.1:9253
    #[arg(long)]
    url: Option<String>,
    /// Only this group
    #[arg(short, long)]
    group: Option<u64>,
    /// Print the JSON of /v1/members instead of a table
    #[arg(long)]
    json: bool,
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
    rgap_core::logging::init(match cli.log_format {
        LogFormatArg::Text => rgap_core::logging::LogFormat::Text,
        LogFormatArg::Json => rgap_core::logging::LogFormat::Json,
    });
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Not `eprintln!`, which panics when stderr is closed.
            let _ = writeln!(std::io::stderr(), "error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Agent(args) => agent::run(agent_options(*args)?).map_err(|e| e.to_string()),
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
        Command::Validate(args) => {
            let validated = rgap_core::validate::validate_config(&args.config).map_err(line)?;
            for output in &validated.unchecked {
                tracing::warn!(
                    "output {output}: spec not checked: its plugin predates the validate entry \
                     point (rebuild it against rgap-plugin-api {} to have specs checked)",
                    rgap_plugin_api::API_VERSION
                );
            }
            print_out(|out| {
                writeln!(
                    out,
                    "ok: {}: {} group(s), {} output(s)",
                    args.config.display(),
                    validated.groups,
                    validated.outputs
                )
            })
        }
        Command::Members(args) => members(args),
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

/// `rgap members`: the base URL from `--url` or the config's `http.listen`, the pages of
/// members joined, then their JSON or a table.
fn members(args: MembersArgs) -> Result<(), CliError> {
    let base = match args.url {
        Some(url) => url,
        None => {
            let config = rgap_core::config::Config::load(&args.config).map_err(line)?;
            let http = config.http.ok_or_else(|| {
                format!(
                    "{}: no http.listen: this listener serves no members over HTTP (add `http: {{listen: 127.0.0.1:9253}}`, or pass --url)",
                    args.config.display()
                )
            })?;
            rgap_core::observe::members_url(http.listen)
        }
    };
    let reply = rgap_core::observe::fetch_members(&base, args.group).map_err(line)?;
    if args.json {
        return print_out(|out| writeln!(out, "{}", reply.to_json()));
    }
    print_out(|out| out.write_all(rgap_core::observe::render_table(&reply).as_bytes()))
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
        psk: agent_psk(args.psk.as_deref(), args.psk_file.as_deref())?,
        interval: args.interval.as_deref().map(parse_interval).transpose()?,
        destinations: args
            .dst
            .iter()
            .map(|d| AddrSpec::parse(d).map_err(|e| format!("--dst: {e}")))
            .collect::<Result<_, _>>()?,
        leave: args.leave,
        check: health_check(
            args.check.as_deref(),
            args.check_timeout.as_deref(),
            &args.rise,
            &args.fall,
        )?,
        leave_on_signal: !args.no_leave,
    })
}

/// The key from `--psk` or `--psk-file` (exactly one; an empty value counts as absent).
fn agent_psk(psk: Option<&str>, psk_file: Option<&std::path::Path>) -> Result<Psk, CliError> {
    const NAME: &str = "--psk-file/RGAP_PSK_FILE";
    let psk_file = psk_file.filter(|path| !path.as_os_str().is_empty());
    match (psk.filter(|v| !v.is_empty()), psk_file) {
        (Some(_), Some(_)) => {
            Err("--psk/RGAP_PSK and --psk-file/RGAP_PSK_FILE: give one, not both".into())
        }
        (_, None) => parse_psk(psk),
        (None, Some(path)) => {
            if let Some(warning) = rgap_core::psk::readable_by_others_warning(path) {
                tracing::warn!("{warning}");
            }
            let keys = rgap_core::psk::read_key_file(path).map_err(|e| format!("{NAME}: {e}"))?;
            // The first key signs: a file shared with a listener lists the current key first.
            Ok(keys.into_iter().next().expect("a key file holds at least one key"))
        }
    }
}

/// The health check, if `--check` is given (an empty command counts as absent).
fn health_check(
    command: Option<&str>,
    timeout: Option<&str>,
    rise: &str,
    fall: &str,
) -> Result<Option<HealthCheck>, CliError> {
    let Some(command) = command.filter(|c| !c.trim().is_empty()) else {
        return Ok(None);
    };
    let timeout = match timeout {
        None => std::time::Duration::from_secs(1),
        Some(text) => {
            let timeout = rgap_core::duration::parse(text)
                .map_err(|e| format!("--check-timeout/RGAP_CHECK_TIMEOUT: {e}"))?;
            if timeout.is_zero() {
                return Err(format!(
                    "--check-timeout/RGAP_CHECK_TIMEOUT: {text:?} must be greater than 0"
                ));
            }
            timeout
        }
    };
    Ok(Some(HealthCheck {
        command: command.to_owned(),
        timeout,
        rise: parse_count(rise, "--rise/RGAP_RISE")?,
        fall: parse_count(fall, "--fall/RGAP_FALL")?,
    }))
}

fn parse_count(text: &str, name: &str) -> Result<u32, CliError> {
    match text.parse::<u32>() {
        Ok(count) if count > 0 => Ok(count),
        _ => Err(format!("{name}: {text:?} is not a count of 1 or more")),
    }
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
    let hint = "64 hex characters; make one with `rgap genpsk`; or --psk-file/RGAP_PSK_FILE";
    let text = required(value, NAME, hint)?;
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
