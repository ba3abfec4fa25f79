//! End-to-end: the real `rgap agent` sends to real UDP sockets, and every datagram is checked
//! with an HMAC written here, independently of `rgap-core`, so a bug shared by the encoder and
//! the verifier in the library cannot hide.

use std::net::{Ipv6Addr, UdpSocket};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

mod common;

use common::vectors::vector_field;
use common::{finish, rgap_command};

const PSK: &str = "8f1302643b0809279794c5cc47f236561d7442b85d748bd7d1a58adfbe9ff431";
const WAIT: Duration = Duration::from_secs(10);

/// The fields of a datagram that passed the independent check.
#[derive(Debug)]
struct Decoded {
    group: u64,
    timestamp_unix_us: i64,
    address: [u8; 16],
}

/// HMAC-SHA256(psk, "RGAP announce" || bytes[..34]) as the design specifies it.
fn sign(psk_hex: &str, header: &[u8]) -> Vec<u8> {
    let key = hex::decode(psk_hex).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(b"RGAP announce");
    mac.update(header);
    mac.finalize().into_bytes().to_vec()
}

/// Checks length, version and signature, then reads the fields; panics on any mismatch.
fn verify(psk_hex: &str, datagram: &[u8]) -> Decoded {
    assert_eq!(datagram.len(), 66, "datagram length");
    assert_eq!(&datagram[..2], &[0x01, 0x00], "version");
    assert_eq!(sign(psk_hex, &datagram[..34]), &datagram[34..], "signature");
    Decoded {
        group: u64::from_be_bytes(datagram[2..10].try_into().unwrap()),
        timestamp_unix_us: i64::from_be_bytes(datagram[10..18].try_into().unwrap()),
        address: datagram[18..34].try_into().unwrap(),
    }
}

fn mapped(v4: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[10] = 0xff;
    out[11] = 0xff;
    out[12..].copy_from_slice(&v4);
    out
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// A UDP socket standing in for a listener.
struct Capture {
    socket: UdpSocket,
}

impl Capture {
    fn bind(addr: &str) -> Self {
        Self { socket: UdpSocket::bind(addr).unwrap() }
    }

    fn dst(&self) -> String {
        self.socket.local_addr().unwrap().to_string()
    }

    /// The next datagram, or None once `WAIT` has passed.
    fn next(&self) -> Option<Vec<u8>> {
        self.next_before(Instant::now() + WAIT)
    }

    fn next_before(&self, deadline: Instant) -> Option<Vec<u8>> {
        let left = deadline.checked_duration_since(Instant::now())?;
        self.socket.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        let mut buf = [0u8; 1500];
        let len = self.socket.recv(&mut buf).ok()?;
        Some(buf[..len].to_vec())
    }
}

/// `rgap agent` with no inherited RGAP_* settings.
fn agent(args: &[&str]) -> Command {
    let mut command = rgap_command(&["agent"]);
    command.args(args);
    command
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}, stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Kills a long-running agent even if an assertion fails first.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn one_shot_ipv4_announcement_verifies_independently() {
    let capture = Capture::bind("127.0.0.1:0");
    let before = now_us();
    let output = finish(agent(&["-g", "1000", "-a", "127.1.2.3", "-k", PSK, "-d", &capture.dst()]));
    assert_success(&output);
    let got = verify(PSK, &capture.next().expect("no datagram"));
    assert_eq!(got.group, 1000);
    assert_eq!(got.address, mapped([127, 1, 2, 3]));
    assert!(got.timestamp_unix_us >= before && got.timestamp_unix_us <= now_us());
}

#[test]
fn ipv6_member_announced_to_an_ipv6_destination() {
    let capture = Capture::bind("[::1]:0");
    let output = finish(agent(&["-g", "7", "-a", "2001:db8::7", "-k", PSK, "-d", &capture.dst()]));
    assert_success(&output);
    let got = verify(PSK, &capture.next().expect("no datagram"));
    assert_eq!(got.group, 7);
    assert_eq!(got.address, "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
}

#[test]
fn every_destination_receives_in_one_run() {
    let captures =
        [Capture::bind("127.0.0.1:0"), Capture::bind("127.0.0.1:0"), Capture::bind("[::1]:0")];
    let mut args = vec!["-g".to_string(), "3".into(), "-a".into(), "10.0.0.3".into()];
    args.extend(["-k".to_string(), PSK.into()]);
    for capture in &captures {
        args.extend(["-d".to_string(), capture.dst()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_success(&finish(agent(&args)));
    for capture in &captures {
        let got = verify(PSK, &capture.next().expect("a destination got nothing"));
        assert_eq!((got.group, got.address), (3, mapped([10, 0, 0, 3])));
    }
}

#[test]
fn interval_repeats_with_increasing_timestamps() {
    const SENDS: usize = 8;
    let capture = Capture::bind("127.0.0.1:0");
    let child =
        agent(&["-g", "9", "-a", "10.0.0.9", "-k", PSK, "-i", "100ms", "-d", &capture.dst()])
            .spawn()
            .unwrap();
    let _running = Running(child);
    let deadline = Instant::now() + WAIT;
    let timestamps: Vec<i64> = (0..SENDS)
        .map(|_| capture.next_before(deadline).expect("fewer datagrams than expected"))
        .map(|datagram| verify(PSK, &datagram).timestamp_unix_us)
        .collect();
    assert!(timestamps.windows(2).all(|w| w[1] > w[0]), "not increasing: {timestamps:?}");
    // A loaded machine may delay one send and catch up with the next, so single gaps say
    // little; the schedule (start + n × interval) shows in the average. Its bounds are wide:
    // sends may come late, never early, and an average ten times the interval is no schedule.
    let average = (timestamps[SENDS - 1] - timestamps[0]) / (SENDS as i64 - 1);
    assert!(
        (60_000..1_000_000).contains(&average),
        "average spacing {average} µs for a 100 ms interval: {timestamps:?}"
    );
}

#[test]
fn address_and_psk_come_from_the_environment() {
    let capture = Capture::bind("127.0.0.1:0");
    let mut cmd = agent(&["-g", "1000", "-d", &capture.dst()]);
    cmd.env("RGAP_ADDRESS", "127.1.2.3").env("RGAP_PSK", PSK);
    assert_success(&finish(cmd));
    let got = verify(PSK, &capture.next().expect("no datagram"));
    assert_eq!(got.address, mapped([127, 1, 2, 3]));
}

#[test]
fn flags_override_the_environment() {
    let capture = Capture::bind("127.0.0.1:0");
    let mut cmd = agent(&["-g", "1", "-a", "10.1.1.1", "-d", &capture.dst()]);
    cmd.env("RGAP_ADDRESS", "10.2.2.2").env("RGAP_PSK", PSK);
    assert_success(&finish(cmd));
    assert_eq!(verify(PSK, &capture.next().unwrap()).address, mapped([10, 1, 1, 1]));
}

#[test]
fn a_failing_destination_does_not_stop_the_good_one() {
    let capture = Capture::bind("[::1]:0");
    let output = finish(agent(&[
        "-g",
        "5",
        "-a",
        "10.0.0.5",
        "-k",
        PSK,
        "-d",
        "239.1.2.3:8271@nosuch0",
        "-d",
        &capture.dst(),
        "-d",
        "[ff02::1]:8271@nosuch0",
    ]));
    assert_success(&output);
    assert_eq!(verify(PSK, &capture.next().expect("good destination got nothing")).group, 5);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("239.1.2.3:8271@nosuch0"), "{stderr}");
    assert!(stderr.contains("[ff02::1]:8271@nosuch0"), "{stderr}");
}

#[test]
fn one_shot_that_reaches_nobody_fails() {
    let output =
        finish(agent(&["-g", "5", "-a", "10.0.0.5", "-k", PSK, "-d", "239.1.2.3:8271@nosuch0"]));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.lines().last().unwrap().starts_with("error: "), "{stderr}");
}

#[test]
fn layout_matches_the_go_agent() {
    let section = "valid go-agent-ipv4";
    let psk = vector_field("announcements.txt", section, "psk");
    let go_packet = hex::decode(vector_field("announcements.txt", section, "packet")).unwrap();
    // The independent signer reproduces the Go agent's packet from its own header...
    assert_eq!(sign(&psk, &go_packet[..34]), &go_packet[34..]);
    let go = verify(&psk, &go_packet);

    // ...and rgap, given the same command line, differs from it only in the timestamp.
    let capture = Capture::bind("127.0.0.1:0");
    let output =
        finish(agent(&["-g", "1000", "-a", "127.1.2.3", "-k", &psk, "-d", &capture.dst()]));
    assert_success(&output);
    let mut ours = capture.next().expect("no datagram");
    let decoded = verify(&psk, &ours);
    assert_eq!((decoded.group, decoded.address), (go.group, go.address));
    ours[10..18].copy_from_slice(&go.timestamp_unix_us.to_be_bytes());
    let resigned = sign(&psk, &ours[..34]);
    ours[34..].copy_from_slice(&resigned);
    assert_eq!(ours, go_packet);
}

/// HMAC-SHA256(psk, "RGAP leave" || bytes[..34]), as the design specifies a leave's signature.
fn sign_leave(psk_hex: &str, header: &[u8]) -> Vec<u8> {
    let key = hex::decode(psk_hex).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(b"RGAP leave");
    mac.update(header);
    mac.finalize().into_bytes().to_vec()
}

#[test]
fn leave_sends_one_signed_leave_that_verifies_independently() {
    let capture = Capture::bind("127.0.0.1:0");
    let before = now_us();
    let output = finish(agent(&[
        "--leave",
        "-g",
        "1000",
        "-a",
        "127.1.2.3",
        "-k",
        PSK,
        "-d",
        &capture.dst(),
    ]));
    assert_success(&output);
    let datagram = capture.next().expect("no leave");
    assert_eq!(datagram.len(), 66);
    assert_eq!(&datagram[..2], &[0x01, 0x01], "leave version");
    assert_eq!(sign_leave(PSK, &datagram[..34]), &datagram[34..], "leave signature");
    assert_ne!(sign(PSK, &datagram[..34]), &datagram[34..], "signed as an announcement");
    assert_eq!(u64::from_be_bytes(datagram[2..10].try_into().unwrap()), 1000);
    let stamp = i64::from_be_bytes(datagram[10..18].try_into().unwrap());
    assert!(stamp >= before && stamp <= now_us());
    assert_eq!(&datagram[18..34], &mapped([127, 1, 2, 3]));
    // One leave, nothing more.
    assert!(capture.next_before(Instant::now() + Duration::from_millis(200)).is_none());
}

#[test]
fn leave_layout_matches_the_independent_leave_vector() {
    let section = "valid leave-ipv4";
    let field = |key: &str| vector_field("leaves.txt", section, key);
    let psk = field("psk");
    let vector = hex::decode(field("packet")).unwrap();
    assert_eq!(sign_leave(&psk, &vector[..34]), &vector[34..]);

    // rgap's leave for the same group and address differs from the vector only in its
    // timestamp (and so its signature).
    let capture = Capture::bind("127.0.0.1:0");
    let output = finish(agent(&[
        "--leave",
        "-g",
        &field("group"),
        "-a",
        &field("address"),
        "-k",
        &psk,
        "-d",
        &capture.dst(),
    ]));
    assert_success(&output);
    let mut ours = capture.next().expect("no leave");
    ours[10..18].copy_from_slice(&vector[10..18]);
    let resigned = sign_leave(&psk, &ours[..34]);
    ours[34..].copy_from_slice(&resigned);
    assert_eq!(ours, vector);
}

#[test]
fn psk_file_supplies_the_key_from_a_flag_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("agent.key");
    std::fs::write(&keys, format!("# the current key\n{PSK}\n{}\n", "11".repeat(32))).unwrap();
    std::fs::set_permissions(&keys, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let capture = Capture::bind("127.0.0.1:0");
    let keys_arg = keys.to_str().unwrap();
    let output =
        finish(agent(&["-g", "1", "-a", "10.0.0.1", "--psk-file", keys_arg, "-d", &capture.dst()]));
    assert_success(&output);
    assert_eq!(verify(PSK, &capture.next().unwrap()).group, 1, "signed with the first key");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("readable by others"), "{stderr}");

    std::fs::set_permissions(&keys, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut command = agent(&["-g", "2", "-a", "10.0.0.2", "-d", &capture.dst()]);
    command.env("RGAP_PSK_FILE", &keys);
    let output = finish(command);
    assert_success(&output);
    assert_eq!(verify(PSK, &capture.next().unwrap()).group, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warning = format!(
        "{} is readable by others (mode 0644) and holds pre-shared keys: chmod 600 it",
        keys.display()
    );
    assert!(stderr.contains(&warning), "{stderr}");
}

#[test]
fn agent_flag_mistakes_are_one_line_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("bad.key");
    std::fs::write(&keys, "abcd\n").unwrap();
    let keys = keys.to_str().unwrap();
    /// Extra flags, environment variables, and what the error line must say.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--check", "true"], &[], "--check needs --interval"),
        (&[], &[("RGAP_CHECK", "true")], "--check needs --interval"),
        (&["--leave", "-i", "1s"], &[], "--leave sends one leave and exits"),
        (&["-i", "1s", "--check", "true", "--rise", "0"], &[], "--rise/RGAP_RISE: \"0\""),
        (&["-i", "1s", "--check", "true"], &[("RGAP_FALL", "x")], "--fall/RGAP_FALL: \"x\""),
        (
            &["-i", "1s", "--check", "true", "--check-timeout", "soon"],
            &[],
            "--check-timeout/RGAP_CHECK_TIMEOUT",
        ),
        (&["--psk-file", keys], &[], "--psk-file/RGAP_PSK_FILE: "),
        (&["--psk-file", "/nonexistent/key"], &[], "cannot read /nonexistent/key"),
        (&[], &[("RGAP_PSK_FILE", keys)], "line 1: expected 64 hex characters, got 4"),
    ];
    for (args, env, expected) in cases {
        let mut all = vec!["-g", "1", "-a", "10.0.0.1", "-d", "127.0.0.1:9"];
        if !args.contains(&"--psk-file") && !env.iter().any(|(k, _)| *k == "RGAP_PSK_FILE") {
            all.extend(["-k", PSK]);
        }
        all.extend(args.iter().copied());
        let mut command = agent(&all);
        for (key, value) in *env {
            command.env(key, value);
        }
        let output = finish(command);
        assert!(!output.status.success(), "{all:?} {env:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ") && last.contains(expected),
            "{all:?} {env:?}: {stderr}"
        );
    }
    let output = finish(agent(&[
        "-g",
        "1",
        "-a",
        "10.0.0.1",
        "-k",
        PSK,
        "--psk-file",
        keys,
        "-d",
        "127.0.0.1:9",
    ]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("give one, not both"), "{stderr}");
}

#[test]
fn check_settings_come_from_the_environment() {
    let capture = Capture::bind("127.0.0.1:0");
    let mut command =
        agent(&["-g", "9", "-a", "10.0.0.9", "-k", PSK, "-i", "50ms", "-d", &capture.dst()]);
    command
        .env("RGAP_CHECK", "exit 0")
        .env("RGAP_CHECK_TIMEOUT", "2s")
        .env("RGAP_RISE", "3")
        .env("RGAP_FALL", "4")
        .env("RUST_LOG", "info");
    let mut child = Running(command.spawn().unwrap());
    // Announcements start only after `rise` passing checks; the first verifies.
    let got = verify(PSK, &capture.next().expect("no announcement once healthy"));
    assert_eq!(got.group, 9);
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("rise 3, fall 4, timeout 2s"), "{stderr}");
    assert!(
        stderr.contains("health check passed 3 time(s) in a row: healthy, announcing"),
        "{stderr}"
    );
    assert!(stderr.contains("received SIGTERM; sent a leave to 1 destination(s)"), "{stderr}");
}
