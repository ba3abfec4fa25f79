//! The wire format of announcements (byte-compatible with the Go rgap) and of leaves (rgap only).
//!
//! 66 bytes, big endian: `version u16 | group u64 | timestamp i64 (Unix µs) | address [16] |
//! HMAC-SHA256 [32]`. An announcement has version `0x0100` and its MAC covers
//! `b"RGAP announce" || bytes[..34]`; a leave has version `0x0101` and its MAC covers
//! `b"RGAP leave" || bytes[..34]`, so no announcement can be turned into a leave by editing
//! its version. This module knows bytes only: no sockets, no clocks beyond converting a
//! `SystemTime` to the timestamp field.
//!
//! The listener's per-datagram path is built from these pieces, cheapest first:
//! [`peek_group`] (length) → group lookup → [`RawAnnouncement::check_version`] (which also says
//! the [`Kind`]) → clock skew on [`RawAnnouncement::timestamp_unix_us`] →
//! [`Verifier::check_signature`] (HMAC, constant time).

use std::net::{IpAddr, Ipv6Addr};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::psk::Psk;

/// Size of every announcement datagram; any other length is dropped.
pub const ANNOUNCEMENT_LEN: usize = 66;
/// The version of announcements, the only one the Go rgap speaks.
pub const VERSION: u16 = 0x0100;
/// The version of leaves ("remove me now"); Go listeners drop them as an unknown version.
pub const LEAVE_VERSION: u16 = 0x0101;
/// Bytes covered by the signature: everything before it.
pub const SIGNED_LEN: usize = 34;
/// Prepended to the signed bytes so an rgap MAC cannot be replayed in another protocol that
/// shares the key (domain separation, as in the Go implementation), nor as the other kind.
const ANNOUNCE_CONTEXT: &[u8] = b"RGAP announce";
const LEAVE_CONTEXT: &[u8] = b"RGAP leave";

const GROUP_AT: usize = 2;
const TIMESTAMP_AT: usize = 10;
const ADDRESS_AT: usize = 18;

type HmacSha256 = Hmac<Sha256>;

/// What a datagram says about its address: still here, or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// "`address` is in `group` as of the timestamp" (version [`VERSION`]).
    Announce,
    /// "`address` left `group` at the timestamp" (version [`LEAVE_VERSION`]).
    Leave,
}

impl Kind {
    /// The version field that marks this kind.
    pub const fn version(self) -> u16 {
        match self {
            Kind::Announce => VERSION,
            Kind::Leave => LEAVE_VERSION,
        }
    }

    /// The kind a version field marks, if rgap knows it.
    pub const fn from_version(version: u16) -> Option<Kind> {
        match version {
            VERSION => Some(Kind::Announce),
            LEAVE_VERSION => Some(Kind::Leave),
            _ => None,
        }
    }

    fn context(self) -> &'static [u8] {
        match self {
            Kind::Announce => ANNOUNCE_CONTEXT,
            Kind::Leave => LEAVE_CONTEXT,
        }
    }
}

/// The fields of one announcement: "`address` is in `group` as of `timestamp_unix_us`".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Announcement {
    /// Redundancy group identifier.
    pub group: u64,
    /// When the agent sent it, in microseconds since the Unix epoch.
    pub timestamp_unix_us: i64,
    /// The member's address; IPv4 is always `IpAddr::V4`, never an IPv4-mapped IPv6 address.
    pub address: IpAddr,
}

/// A datagram that could not even be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not exactly [`ANNOUNCEMENT_LEN`] bytes.
    #[error("announcement is {len} bytes, expected {ANNOUNCEMENT_LEN}")]
    WrongLength {
        /// Length of the datagram received.
        len: usize,
    },
}

/// Why an announcement was rejected; the listener counts drops by these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not exactly [`ANNOUNCEMENT_LEN`] bytes.
    #[error("announcement is {len} bytes, expected {ANNOUNCEMENT_LEN}")]
    WrongLength {
        /// Length of the datagram received.
        len: usize,
    },
    /// Version field is not the one expected ([`VERSION`] or [`LEAVE_VERSION`]).
    #[error("unsupported version {found:#06x}, expected {expected}")]
    BadVersion {
        /// The version found in the datagram.
        found: u16,
        /// What was acceptable here, e.g. `0x0100`.
        expected: &'static str,
    },
    /// The HMAC does not match: wrong key, or the datagram was altered.
    #[error("announcement signature does not verify")]
    BadSignature,
}

impl From<DecodeError> for VerifyError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::WrongLength { len } => VerifyError::WrongLength { len },
        }
    }
}

impl Announcement {
    /// The address as it goes on the wire: IPv6, or IPv4 as `::ffff:a.b.c.d`.
    pub fn address_bytes(&self) -> [u8; 16] {
        address_to_wire(self.address)
    }

    /// The first [`SIGNED_LEN`] bytes of an announcement: version, group, timestamp, address.
    pub fn encode_header(&self) -> [u8; SIGNED_LEN] {
        self.encode_header_as(Kind::Announce)
    }

    /// The first [`SIGNED_LEN`] bytes of a datagram of `kind` with these fields.
    pub fn encode_header_as(&self, kind: Kind) -> [u8; SIGNED_LEN] {
        let mut out = [0u8; SIGNED_LEN];
        out[..GROUP_AT].copy_from_slice(&kind.version().to_be_bytes());
        out[GROUP_AT..TIMESTAMP_AT].copy_from_slice(&self.group.to_be_bytes());
        out[TIMESTAMP_AT..ADDRESS_AT].copy_from_slice(&self.timestamp_unix_us.to_be_bytes());
        out[ADDRESS_AT..].copy_from_slice(&self.address_bytes());
        out
    }
}

/// Encodes `announcement` and signs it with `psk`.
pub fn encode_signed(announcement: &Announcement, psk: &Psk) -> [u8; ANNOUNCEMENT_LEN] {
    encode_signed_as(Kind::Announce, announcement, psk)
}

/// Encodes a leave of `fields.address` from `fields.group` at `fields.timestamp_unix_us` and
/// signs it with `psk`.
pub fn encode_signed_leave(fields: &Announcement, psk: &Psk) -> [u8; ANNOUNCEMENT_LEN] {
    encode_signed_as(Kind::Leave, fields, psk)
}

/// Encodes a datagram of `kind` with `fields` and signs it with `psk`.
pub fn encode_signed_as(kind: Kind, fields: &Announcement, psk: &Psk) -> [u8; ANNOUNCEMENT_LEN] {
    let header = fields.encode_header_as(kind);
    let mut mac = keyed_mac(psk, kind);
    mac.update(&header);
    let mut out = [0u8; ANNOUNCEMENT_LEN];
    out[..SIGNED_LEN].copy_from_slice(&header);
    out[SIGNED_LEN..].copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// Reads the group of a datagram after checking its length, so unknown groups are dropped
/// before any other work.
pub fn peek_group(bytes: &[u8]) -> Result<u64, DecodeError> {
    Ok(be_u64(check_length(bytes)?, GROUP_AT))
}

/// Converts a wall-clock time to the timestamp field (µs since the epoch; negative before it).
pub fn unix_micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |us| -us),
    }
}

/// An announcement's fields read without verifying anything but the length, so that cheap
/// checks (version, clock skew) can run before the HMAC. Borrows the datagram: no copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAnnouncement<'a> {
    /// Version field, not yet checked.
    pub version: u16,
    /// Group field.
    pub group: u64,
    /// Timestamp field, Unix microseconds.
    pub timestamp_unix_us: i64,
    /// Address field as on the wire (IPv4 mapped).
    pub address: [u8; 16],
    bytes: &'a [u8; ANNOUNCEMENT_LEN],
}

impl<'a> RawAnnouncement<'a> {
    /// Parses the header fields of a datagram; fails only on a wrong length.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let bytes: &[u8; ANNOUNCEMENT_LEN] = check_length(bytes)?;
        let mut address = [0u8; 16];
        address.copy_from_slice(&bytes[ADDRESS_AT..SIGNED_LEN]);
        Ok(Self {
            version: u16::from_be_bytes([bytes[0], bytes[1]]),
            group: be_u64(bytes, GROUP_AT),
            timestamp_unix_us: be_u64(bytes, TIMESTAMP_AT) as i64,
            address,
            bytes,
        })
    }

    /// The kind the version field marks; fails for a version rgap does not know.
    pub fn check_version(&self) -> Result<Kind, VerifyError> {
        Kind::from_version(self.version)
            .ok_or(VerifyError::BadVersion { found: self.version, expected: "0x0100 or 0x0101" })
    }

    /// The address with IPv4-mapped addresses turned back into IPv4.
    pub fn ip(&self) -> IpAddr {
        address_from_wire(self.address)
    }

    /// The whole datagram.
    pub fn bytes(&self) -> &'a [u8; ANNOUNCEMENT_LEN] {
        self.bytes
    }

    /// The fields as an [`Announcement`], WITHOUT any verification.
    pub fn to_unverified(&self) -> Announcement {
        Announcement {
            group: self.group,
            timestamp_unix_us: self.timestamp_unix_us,
            address: self.ip(),
        }
    }
}

/// Checks announcements and leaves signed with one key. Build one per key at startup; each
/// check clones a pre-keyed HMAC state (already fed the context string of its kind), which
/// costs a memcpy, not a re-key, and allocates nothing.
#[derive(Clone)]
pub struct Verifier {
    announce: HmacSha256,
    leave: HmacSha256,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The MAC state is derived from the key: never print it.
        f.write_str("Verifier(<keyed>)")
    }
}

impl Verifier {
    /// Keys the HMACs with `psk` once.
    pub fn new(psk: &Psk) -> Self {
        Self { announce: keyed_mac(psk, Kind::Announce), leave: keyed_mac(psk, Kind::Leave) }
    }

    /// Checks the signature of `raw` as a datagram of `kind`, in constant time. The version
    /// field is not looked at: the caller has read `kind` from it.
    #[inline]
    pub fn check_signature(
        &self,
        raw: &RawAnnouncement<'_>,
        kind: Kind,
    ) -> Result<(), VerifyError> {
        let bytes = raw.bytes();
        let mut mac = match kind {
            Kind::Announce => self.announce.clone(),
            Kind::Leave => self.leave.clone(),
        };
        mac.update(&bytes[..SIGNED_LEN]);
        mac.verify_slice(&bytes[SIGNED_LEN..]).map_err(|_| VerifyError::BadSignature)
    }

    /// Checks that `raw` is an announcement (version, then signature) and returns its fields.
    pub fn verify(&self, raw: &RawAnnouncement<'_>) -> Result<Announcement, VerifyError> {
        self.verify_as(raw, Kind::Announce)
    }

    /// Checks that `raw` is a leave (version, then signature) and returns its fields.
    pub fn verify_leave(&self, raw: &RawAnnouncement<'_>) -> Result<Announcement, VerifyError> {
        self.verify_as(raw, Kind::Leave)
    }

    fn verify_as(
        &self,
        raw: &RawAnnouncement<'_>,
        kind: Kind,
    ) -> Result<Announcement, VerifyError> {
        if raw.version != kind.version() {
            let expected = match kind {
                Kind::Announce => "0x0100",
                Kind::Leave => "0x0101",
            };
            return Err(VerifyError::BadVersion { found: raw.version, expected });
        }
        self.check_signature(raw, kind)?;
        Ok(raw.to_unverified())
    }

    /// Length, version and signature of an announcement in one call, for callers with no
    /// checks of their own to put in between. A `&[u8; 66]` coerces to the slice.
    pub fn verify_and_decode(&self, bytes: &[u8]) -> Result<Announcement, VerifyError> {
        self.verify(&RawAnnouncement::parse(bytes)?)
    }

    /// As [`Verifier::verify_and_decode`], for a leave.
    pub fn verify_and_decode_leave(&self, bytes: &[u8]) -> Result<Announcement, VerifyError> {
        self.verify_leave(&RawAnnouncement::parse(bytes)?)
    }
}

/// An HMAC keyed with `psk` that has already absorbed the context prefix of `kind`.
fn keyed_mac(psk: &Psk, kind: Kind) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail for 32 bytes.
    let mut mac = HmacSha256::new_from_slice(psk.as_bytes()).expect("HMAC takes any key length");
    mac.update(kind.context());
    mac
}

fn check_length(bytes: &[u8]) -> Result<&[u8; ANNOUNCEMENT_LEN], DecodeError> {
    bytes.try_into().map_err(|_| DecodeError::WrongLength { len: bytes.len() })
}

fn be_u64(bytes: &[u8; ANNOUNCEMENT_LEN], at: usize) -> u64 {
    let mut field = [0u8; 8];
    field.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(field)
}

fn address_to_wire(address: IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// IPv4-mapped addresses become `IpAddr::V4` so that a member has one canonical form.
fn address_from_wire(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::PathBuf;

    /// One `[kind name]` section of the vectors file.
    struct Vector {
        valid: bool,
        name: String,
        fields: HashMap<String, String>,
    }

    impl Vector {
        fn field(&self, key: &str) -> &str {
            self.fields.get(key).unwrap_or_else(|| panic!("vector {}: missing {key}", self.name))
        }

        fn psk(&self) -> Psk {
            Psk::from_hex(self.field("psk")).unwrap()
        }

        fn packet(&self) -> Vec<u8> {
            hex::decode(self.field("packet")).unwrap()
        }
    }

    /// The vectors file `name`: beside `$RGAP_VECTORS` (which names `announcements.txt`),
    /// else the shared vectors beside the repository, else the copy in `testdata/` (for a
    /// clone tested on its own).
    fn vectors_path(name: &str) -> PathBuf {
        if let Some(path) = std::env::var_os("RGAP_VECTORS") {
            return PathBuf::from(path).with_file_name(name);
        }
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let shared = repo.join("../shared/vectors").join(name);
        if shared.is_file() {
            shared
        } else {
            repo.join("testdata/vectors").join(name)
        }
    }

    /// Parses the ini-like vectors file `name`: `# comments`, `[valid|invalid name]`,
    /// `key=value`.
    fn load_vectors(name: &str) -> Vec<Vector> {
        let path = vectors_path(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (set RGAP_VECTORS)", path.display()));
        let mut vectors: Vec<Vector> = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                let (kind, name) = header.split_once(' ').expect("[kind name]");
                assert!(kind == "valid" || kind == "invalid", "unknown section {kind}");
                vectors.push(Vector {
                    valid: kind == "valid",
                    name: name.to_string(),
                    fields: HashMap::new(),
                });
            } else {
                let (key, value) = line.split_once('=').expect("key=value");
                let current = vectors.last_mut().expect("field before first section");
                current.fields.insert(key.to_string(), value.to_string());
            }
        }
        assert!(vectors.iter().any(|v| v.valid) && vectors.iter().any(|v| !v.valid));
        vectors
    }

    fn fields_of(vector: &Vector) -> Announcement {
        Announcement {
            group: vector.field("group").parse().unwrap(),
            timestamp_unix_us: vector.field("timestamp_unix_us").parse().unwrap(),
            address: vector.field("address").parse().unwrap(),
        }
    }

    /// The rejection an invalid vector's `reason` calls for.
    fn expected_error(vector: &Vector, len: usize) -> VerifyError {
        let reason = vector.field("reason");
        if reason.contains("version") {
            // The packet in that vector carries this version; read it from the bytes.
            let packet = vector.packet();
            VerifyError::BadVersion {
                found: u16::from_be_bytes([packet[0], packet[1]]),
                expected: "0x0100",
            }
        } else if reason.contains("signature") || reason.contains("psk") {
            VerifyError::BadSignature
        } else if reason.contains("bytes, not 66") {
            VerifyError::WrongLength { len }
        } else {
            panic!("vector {}: unrecognised reason {reason:?}", vector.name)
        }
    }

    #[test]
    fn valid_vectors_verify_decode_and_reencode_identically() {
        for vector in load_vectors("announcements.txt").iter().filter(|v| v.valid) {
            let packet = vector.packet();
            let psk = vector.psk();
            let decoded = Verifier::new(&psk)
                .verify_and_decode(&packet)
                .unwrap_or_else(|e| panic!("vector {}: {e}", vector.name));
            let expected = fields_of(vector);
            assert_eq!(decoded, expected, "vector {}", vector.name);
            assert_eq!(
                encode_signed(&expected, &psk).as_slice(),
                packet.as_slice(),
                "vector {}",
                vector.name
            );
        }
    }

    #[test]
    fn invalid_vectors_are_rejected_for_their_reason() {
        for vector in load_vectors("announcements.txt").iter().filter(|v| !v.valid) {
            let packet = vector.packet();
            let got = Verifier::new(&vector.psk()).verify_and_decode(&packet);
            assert_eq!(got, Err(expected_error(vector, packet.len())), "vector {}", vector.name);
        }
    }

    #[test]
    fn valid_leave_vectors_verify_decode_and_reencode_identically() {
        for vector in load_vectors("leaves.txt").iter().filter(|v| v.valid) {
            let packet = vector.packet();
            let psk = vector.psk();
            let raw = RawAnnouncement::parse(&packet).unwrap();
            assert_eq!(raw.check_version(), Ok(Kind::Leave), "vector {}", vector.name);
            let decoded = Verifier::new(&psk)
                .verify_leave(&raw)
                .unwrap_or_else(|e| panic!("vector {}: {e}", vector.name));
            let expected = fields_of(vector);
            assert_eq!(decoded, expected, "vector {}", vector.name);
            assert_eq!(
                encode_signed_leave(&expected, &psk).as_slice(),
                packet.as_slice(),
                "vector {}",
                vector.name
            );
            // A leave is never an announcement, whatever the key.
            assert!(Verifier::new(&psk).verify(&raw).is_err(), "vector {}", vector.name);
        }
    }

    #[test]
    fn invalid_leave_vectors_are_rejected() {
        for vector in load_vectors("leaves.txt").iter().filter(|v| !v.valid) {
            let packet = vector.packet();
            let got = Verifier::new(&vector.psk()).verify_and_decode_leave(&packet);
            // Every invalid leave vector is 66 bytes with the leave version: only the
            // signature can be what is wrong.
            assert_eq!(got, Err(VerifyError::BadSignature), "vector {}", vector.name);
        }
    }

    #[test]
    fn an_announcement_with_its_version_changed_is_not_a_leave() {
        let mut packet = encode_signed(&sample("10.0.0.1"), &psk(1));
        packet[..2].copy_from_slice(&LEAVE_VERSION.to_be_bytes());
        assert_eq!(
            Verifier::new(&psk(1)).verify_and_decode_leave(&packet),
            Err(VerifyError::BadSignature)
        );
        let leave = encode_signed_leave(&sample("10.0.0.1"), &psk(1));
        assert_eq!(leave[..34], packet[..34], "the same header");
        assert_eq!(Verifier::new(&psk(1)).verify_and_decode_leave(&leave), Ok(sample("10.0.0.1")));
    }

    #[test]
    fn leaves_and_announcements_differ_only_in_version_and_signature() {
        let fields = sample("2001:db8::9");
        let announce = encode_signed(&fields, &psk(3));
        let leave = encode_signed_leave(&fields, &psk(3));
        assert_eq!(&leave[..2], &[0x01, 0x01]);
        assert_eq!(announce[2..34], leave[2..34]);
        assert_ne!(announce[34..], leave[34..]);
    }

    fn sample(address: &str) -> Announcement {
        Announcement {
            group: 1000,
            timestamp_unix_us: 1_795_549_038_652_449,
            address: address.parse().unwrap(),
        }
    }

    fn psk(byte: u8) -> Psk {
        Psk::from_bytes([byte; 32])
    }

    #[test]
    fn ipv4_goes_on_the_wire_mapped_and_comes_back_as_v4() {
        let packet = encode_signed(&sample("10.1.2.3"), &psk(1));
        assert_eq!(&packet[18..34], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]);
        let raw = RawAnnouncement::parse(&packet).unwrap();
        assert_eq!(raw.ip(), "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn peek_group_reads_group_and_checks_only_length() {
        let mut packet = encode_signed(&sample("::1"), &psk(1));
        packet[0] = 0xee; // a bad version does not matter for peeking
        assert_eq!(peek_group(&packet), Ok(1000));
        assert_eq!(peek_group(&packet[..10]), Err(DecodeError::WrongLength { len: 10 }));
    }

    #[test]
    fn raw_fields_are_available_before_verification() {
        let packet = encode_signed(&sample("2001:db8::1"), &psk(1));
        let raw = RawAnnouncement::parse(&packet).unwrap();
        assert_eq!(raw.version, VERSION);
        assert_eq!(raw.group, 1000);
        assert_eq!(raw.timestamp_unix_us, 1_795_549_038_652_449);
        assert_eq!(raw.bytes(), &packet);
        assert_eq!(raw.check_version(), Ok(Kind::Announce));
    }

    #[test]
    fn version_is_checked_before_the_signature() {
        // Wrong key AND wrong version: the cheap check must be the one reported.
        let mut packet = encode_signed(&sample("10.0.0.1"), &psk(1));
        packet[1] = 0x02;
        let got = Verifier::new(&psk(2)).verify_and_decode(&packet);
        assert_eq!(got, Err(VerifyError::BadVersion { found: 0x0102, expected: "0x0100" }));
        let raw = RawAnnouncement::parse(&packet).unwrap();
        assert!(matches!(raw.check_version(), Err(VerifyError::BadVersion { found: 0x0102, .. })));
    }

    #[test]
    fn any_flipped_bit_breaks_the_signature() {
        let packet = encode_signed(&sample("10.0.0.1"), &psk(1));
        let verifier = Verifier::new(&psk(1));
        for byte in 2..ANNOUNCEMENT_LEN {
            let mut altered = packet;
            altered[byte] ^= 0x01;
            assert_eq!(
                verifier.verify_and_decode(&altered),
                Err(VerifyError::BadSignature),
                "byte {byte}"
            );
        }
    }

    #[test]
    fn one_verifier_checks_many_datagrams() {
        let verifier = Verifier::new(&psk(7));
        for n in 0..3 {
            let mut announcement = sample("192.0.2.1");
            announcement.timestamp_unix_us += n;
            let packet = encode_signed(&announcement, &psk(7));
            assert_eq!(verifier.verify_and_decode(&packet), Ok(announcement));
        }
    }

    #[test]
    fn unix_micros_handles_both_sides_of_the_epoch() {
        let after = UNIX_EPOCH + std::time::Duration::from_micros(1_500);
        let before = UNIX_EPOCH - std::time::Duration::from_micros(1_500);
        assert_eq!(unix_micros(after), 1_500);
        assert_eq!(unix_micros(before), -1_500);
    }

    #[test]
    fn debug_does_not_expose_the_keyed_state() {
        assert_eq!(format!("{:?}", Verifier::new(&psk(1))), "Verifier(<keyed>)");
    }
}
