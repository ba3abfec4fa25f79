//! Writes a [`Reply`] as a DNS message. The records are only A, AAAA, the RFC 8482 HINFO
//! and OPT, whose wire forms are fixed, so they are written directly rather than through
//! hickory's general encoder: it is the hot path, and this way the question is copied as
//! the client sent it, answer names are either a pointer to it (`compress: true`) or a copy
//! of it, and truncation keeps the OPT record.

use std::net::IpAddr;

use hickory_server::proto::op::Metadata;

use crate::answer::{Answer, Reply, RFC8482_TTL};

/// A record's fixed part after its name: type, class, TTL, RDLENGTH.
const RECORD_FIXED: usize = 10;
/// An OPT record without options: root name, then the fixed part.
const OPT_LENGTH: usize = 1 + RECORD_FIXED;
/// A pointer to the question name, which always starts right after the 12-byte header.
const QUESTION_NAME_POINTER: [u8; 2] = [0xC0, 12];
/// The header's length.
pub const HEADER_LENGTH: usize = 12;
/// HINFO RDATA of RFC 8482: the character-strings "RFC8482" and "".
const RFC8482_HINFO: [u8; 9] = [7, b'R', b'F', b'C', b'8', b'4', b'8', b'2', 0];

/// The bytes left for answer records in a response of at most `limit` bytes whose
/// question name is `name_length` bytes long, with an OPT record if `edns`.
pub fn answer_room(limit: u16, name_length: usize, edns: bool) -> usize {
    let opt_length = if edns { OPT_LENGTH } else { 0 };
    usize::from(limit).saturating_sub(HEADER_LENGTH + name_length + 4 + opt_length)
}

/// The length of `answer` as a record whose owner name takes `owner_length` bytes.
pub fn record_length(owner_length: usize, answer: &Answer) -> usize {
    owner_length + RECORD_FIXED + rdata_length(answer)
}

/// Encodes `reply` into `out` (cleared first). `question` is the question section as the
/// client sent it (name, type, class) and `name_length` the length of its name; both empty
/// when the response echoes no question. Answers that do not fit in `reply.limit` are left
/// out and TC is set, as it is when `reply.truncated`; the OPT record always stays. Returns
/// whether TC was set.
pub fn encode(
    reply: &Reply,
    question: &[u8],
    name_length: usize,
    compress: bool,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    let owner: &[u8] = if compress { &QUESTION_NAME_POINTER } else { &question[..name_length] };
    let opt_length = if reply.edns.is_some() { OPT_LENGTH } else { 0 };
    let limit = usize::from(reply.limit);

    // How many answers fit, leaving room for the OPT record. The responder picked only
    // what fits already; this keeps the limit whatever it was given.
    let mut room = limit.saturating_sub(HEADER_LENGTH + question.len() + opt_length);
    let mut fitting = 0;
    for answer in &reply.answers {
        let length = record_length(owner.len(), answer);
        if length > room {
            break;
        }
        room -= length;
        fitting += 1;
    }
    let truncated = reply.truncated || fitting < reply.answers.len();

    let mut metadata = reply.metadata;
    metadata.truncation |= truncated;
    let question_count = u16::from(!question.is_empty());
    let additional_count = u16::from(reply.edns.is_some());
    out.reserve(limit.saturating_sub(room));
    out.extend_from_slice(&header(&metadata, question_count, fitting as u16, additional_count));
    out.extend_from_slice(question);
    for answer in &reply.answers[..fitting] {
        out.extend_from_slice(owner);
        // The rest of the record built whole, then copied once.
        let mut record = [0u8; RECORD_FIXED + 16];
        let (record_type, ttl, rdata): (u16, u32, &[u8]) = match answer {
            Answer::Address { ip: IpAddr::V4(ip), ttl } => (1, *ttl, &ip.octets()),
            Answer::Address { ip: IpAddr::V6(ip), ttl } => (28, *ttl, &ip.octets()),
            Answer::Rfc8482 => (13, RFC8482_TTL, &RFC8482_HINFO),
        };
        record[0..2].copy_from_slice(&record_type.to_be_bytes());
        record[2..4].copy_from_slice(&1u16.to_be_bytes()); // class IN
        record[4..8].copy_from_slice(&ttl.to_be_bytes());
        record[8..10].copy_from_slice(&(rdata.len() as u16).to_be_bytes());
        record[RECORD_FIXED..RECORD_FIXED + rdata.len()].copy_from_slice(rdata);
        out.extend_from_slice(&record[..RECORD_FIXED + rdata.len()]);
    }
    if let Some(edns) = &reply.edns {
        let rcode_high = (u16::from(metadata.response_code) >> 4) as u8;
        out.push(0); // root
        out.extend_from_slice(&[0, 41]); // OPT
        out.extend_from_slice(&edns.max_payload.to_be_bytes()); // the "class": our UDP size
        out.extend_from_slice(&[rcode_high, 0]); // extended RCODE, version 0
        out.extend_from_slice(&[if edns.dnssec_ok { 0x80 } else { 0 }, 0]); // DO, Z
        out.extend_from_slice(&[0, 0]); // no options
    }
    truncated
}

fn rdata_length(answer: &Answer) -> usize {
    match answer {
        Answer::Address { ip: IpAddr::V4(_), .. } => 4,
        Answer::Address { ip: IpAddr::V6(_), .. } => 16,
        Answer::Rfc8482 => RFC8482_HINFO.len(),
    }
}

/// The 12-byte header: ID, flags (QR, opcode, AA, TC, RD; RA, AD, CD, low RCODE), counts.
fn header(metadata: &Metadata, questions: u16, answers: u16, additionals: u16) -> [u8; 12] {
    let id = metadata.id.to_be_bytes();
    let opcode = u8::from(metadata.op_code) & 0x0F;
    let flags_high = 0x80 // QR: a response
        | (opcode << 3)
        | (u8::from(metadata.authoritative) << 2)
        | (u8::from(metadata.truncation) << 1)
        | u8::from(metadata.recursion_desired);
    let flags_low = (u8::from(metadata.recursion_available) << 7)
        | (u8::from(metadata.authentic_data) << 5)
        | (u8::from(metadata.checking_disabled) << 4)
        | (u16::from(metadata.response_code) & 0x0F) as u8;
    let [q0, q1] = questions.to_be_bytes();
    let [a0, a1] = answers.to_be_bytes();
    let [d0, d1] = additionals.to_be_bytes();
    [id[0], id[1], flags_high, flags_low, q0, q1, a0, a1, 0, 0, d0, d1]
}
