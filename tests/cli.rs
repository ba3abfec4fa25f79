//! End-to-end checks of the `rgap` command line: what an operator sees for good and bad input.

use std::process::{Command, Output};

mod common;

use common::{finish, rgap_command};

const PSK: &str = "8f1302643b0809279794c5cc47f236561d7442b85d748bd7d1a58adfbe9ff431";

fn rgap(args: &[&str]) -> Command {
    rgap_command(args)
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Asserts a failed run whose whole stderr is one `error:` line, and returns that line.
fn one_error_line(output: Output) -> String {
    let err = stderr(&output);
    assert!(!output.status.success(), "should fail; stderr: {err}");
    assert_eq!(err.lines().count(), 1, "expected one line:\n{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
    err.trim_end().to_string()
}

#[test]
fn short_psk_names_the_flag_and_the_length() {
    let out = finish(rgap(&["agent", "-g", "1", "-a", "10.0.0.1", "-k", "0123456789ab"]));
    assert_eq!(one_error_line(out), "error: --psk/RGAP_PSK: expected 64 hex characters, got 12");
}

/// Agent arguments, environment, and the start of the expected error line.
type BadInput<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn each_bad_agent_input_is_one_line_naming_the_flag() {
    let bad_hex = format!("{}zz", &PSK[..62]);
    let cases: &[BadInput] = &[
        (&["-g", "1", "-k", PSK], &[], "--address/RGAP_ADDRESS: required"),
        (
            &["-g", "1", "-a", "10.0.0"],
            &[("RGAP_PSK", PSK)],
            "--address/RGAP_ADDRESS: \"10.0.0\" is not an IP address",
        ),
        (
            &["-g", "1"],
            &[("RGAP_ADDRESS", "nope"), ("RGAP_PSK", PSK)],
            "--address/RGAP_ADDRESS: \"nope\"",
        ),
        (&["-g", "1", "-a", "10.0.0.1"], &[], "--psk/RGAP_PSK: required"),
        (
            &["-g", "1", "-a", "10.0.0.1", "-k", &bad_hex],
            &[],
            "--psk/RGAP_PSK: invalid hex character 'z'",
        ),
        (
            &["-g", "1", "-a", "10.0.0.1"],
            &[("RGAP_PSK", "abc")],
            "--psk/RGAP_PSK: expected 64 hex characters, got 3",
        ),
        (
            &["-g", "1", "-a", "10.0.0.1", "-k", PSK, "-i", "15 parsecs"],
            &[],
            "--interval: invalid duration \"15 parsecs\"",
        ),
        (
            &["-g", "1", "-a", "10.0.0.1", "-k", PSK, "-i", "0s"],
            &[],
            "--interval: \"0s\" must be greater than 0",
        ),
        (
            &["-g", "1", "-a", "10.0.0.1", "-k", PSK, "-i", "-5s"],
            &[],
            "--interval: invalid duration \"-5s\": must not be negative",
        ),
        (
            &["-g", "1", "-a", "10.0.0.1", "-k", PSK, "-d", "localhost:8271"],
            &[],
            "--dst: invalid address \"localhost:8271\"",
        ),
        (
            &["-g", "1", "-a", "10.0.0.1", "-k", PSK, "-d", "127.0.0.1"],
            &[],
            "--dst: invalid address \"127.0.0.1\": missing :port",
        ),
        (&["-g", "-1", "-a", "10.0.0.1", "-k", PSK], &[], "--group: \"-1\" is not a group number"),
        (&["-g", "lots", "-a", "10.0.0.1", "-k", PSK], &[], "--group: \"lots\""),
    ];
    for (args, env, expected) in cases {
        let mut cmd = rgap(&[&["agent"], *args].concat());
        cmd.envs(env.iter().copied());
        let line = one_error_line(finish(cmd));
        assert!(line.starts_with(&format!("error: {expected}")), "{args:?}: {line}");
    }
}

#[test]
fn psk_errors_do_not_echo_the_key() {
    let almost = &PSK[..63];
    let line = one_error_line(finish(rgap(&["agent", "-g", "1", "-a", "10.0.0.1", "-k", almost])));
    assert!(!line.contains(almost), "{line}");
}

#[test]
fn missing_group_is_reported_by_clap() {
    let out = finish(rgap(&["agent", "-a", "10.0.0.1", "-k", PSK]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--group"), "{}", stderr(&out));
}

#[test]
fn genpsk_prints_a_fresh_lowercase_key() {
    let keys: Vec<String> = (0..2)
        .map(|_| {
            let out = finish(rgap(&["genpsk"]));
            assert!(out.status.success());
            stdout(&out)
        })
        .collect();
    for key in &keys {
        let hex = key.strip_suffix('\n').expect("newline-terminated");
        assert_eq!(hex.len(), 64, "{key:?}");
        assert!(hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')), "{key:?}");
    }
    assert_ne!(keys[0], keys[1]);
}

#[test]
fn generated_key_is_accepted_by_the_agent_parser() {
    let key = stdout(&finish(rgap(&["genpsk"])));
    // A send to the discard port on loopback is enough to prove the key parsed.
    let out = finish(rgap(&[
        "agent",
        "-g",
        "1",
        "-a",
        "10.0.0.1",
        "-k",
        key.trim(),
        "-d",
        "127.0.0.1:9",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn help_lists_every_subcommand() {
    let out = finish(rgap(&["--help"]));
    assert!(out.status.success());
    let help = stdout(&out);
    for command in ["agent", "listener", "genpsk", "plugins", "version"] {
        let listed = help
            .lines()
            .any(|l| l.trim_start().starts_with(command) && l.trim().len() > command.len());
        assert!(listed, "{command} missing or without description:\n{help}");
    }
}

#[test]
fn agent_help_shows_env_names_but_not_the_key() {
    let mut cmd = rgap(&["agent", "--help"]);
    cmd.env("RGAP_PSK", PSK);
    let help = stdout(&finish(cmd));
    assert!(help.contains("RGAP_PSK") && help.contains("RGAP_ADDRESS"), "{help}");
    assert!(!help.contains(PSK), "{help}");
    assert!(help.contains("239.82.71.65:8271"), "{help}");
}

#[test]
fn version_names_rgap_and_the_plugin_api() {
    let out = finish(rgap(&["version"]));
    assert!(out.status.success());
    let text = stdout(&out);
    let expected = format!("rgap {} (plugin API ", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected) && text.ends_with(")\n"), "{text}");
}

#[test]
fn listener_with_a_missing_config_fails_with_an_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let out = finish(rgap(&["listener", "-c", path.to_str().unwrap()]));
    assert!(!out.status.success());
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.contains("absent.yaml"), "{err}");
}
