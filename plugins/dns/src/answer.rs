//! The answers: one DNS query in, one response out, decided from the published [`View`].
//!
//! [`Responder::reply`] holds every rule (which names, which codes, which records and TTLs);
//! [`Responder::respond`] wraps it for the plugin's own UDP and TCP loops, from wire bytes to
//! wire bytes with an encoder it configures (name compression, UDP size), and counts what
//! it sent; and the [`RequestHandler`] impl lets hickory-server's `Server` run the same rules.
//!
//! A query costs the same whatever the size of its group: the records are picked from a
//! random position of the member list onwards, wrapping around, only as many as fit in the
//! response (and `max_answers`), then those few are shuffled. Nothing walks, copies or
//! shuffles the whole group. ANY over UDP gets the single HINFO record of RFC 8482.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_server::proto::rr::rdata::{A, AAAA, HINFO};
use hickory_server::proto::rr::{DNSClass, LowerName, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder, DecodeError};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::metrics::Metrics;
use crate::question::{read_question, NameKey, WireQuestion};
use crate::spec::MappedName;
use crate::view::{GroupMembers, View};
use crate::wire::{self, HEADER_LENGTH};

/// The largest UDP response sent, whatever size the client advertises: the DNS Flag Day 2020
/// value, which avoids IP fragmentation on common paths. Larger answers set TC and clients
/// ask again over TCP.
pub const UDP_PAYLOAD_LIMIT: u16 = 1232;
/// The UDP limit for a query without EDNS (RFC 1035 §4.2.1).
const CLASSIC_UDP_LIMIT: u16 = 512;

/// How the query arrived; it bounds the response size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The TTL of the RFC 8482 HINFO record: it says nothing about the members, so resolvers
/// may keep it.
pub const RFC8482_TTL: u32 = 3600;

/// One record of the answer section; its owner is the question's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An A record for an IPv4 address, AAAA for IPv6.
    Address { ip: IpAddr, ttl: u32 },
    /// The answer to ANY over UDP (RFC 8482 §4.2): one HINFO record with CPU `RFC8482` and
    /// an empty OS, instead of every address, so that the port is no amplifier.
    Rfc8482,
}

/// The OPT record of a response to a query that had one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdnsReply {
    /// The UDP payload size advertised: [`UDP_PAYLOAD_LIMIT`].
    pub max_payload: u16,
    /// Copied from the query (RFC 3225).
    pub dnssec_ok: bool,
}

/// A response before encoding.
#[derive(Debug)]
pub struct Reply {
    pub metadata: Metadata,
    pub answers: Vec<Answer>,
    /// More records would have been answered had they fit: the response goes out with TC.
    pub truncated: bool,
    /// Present when the query had EDNS.
    pub edns: Option<EdnsReply>,
    /// Maximum size of the encoded response.
    pub limit: u16,
}

/// How answers are written, from the spec.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Answer names as pointers to the question.
    pub compress: bool,
    /// Set AA.
    pub authoritative: bool,
    /// Records per answer at most.
    pub max_answers: usize,
}

/// The mapped names by [`NameKey`]. foldhash rather than SipHash: every query looks a name
/// up, and the map is built once from the config, so a client choosing names cannot make
/// it grow or collide its way to slow inserts.
type Names = HashMap<Box<[u8]>, MappedName, foldhash::fast::RandomState>;

/// Answers queries for the mapped names.
pub struct Responder {
    names: Names,
    view: Arc<View>,
    style: Style,
    metrics: Metrics,
}

impl Responder {
    pub fn new(
        names: HashMap<LowerName, MappedName>,
        view: Arc<View>,
        style: Style,
        metrics: Metrics,
    ) -> Self {
        let names = names
            .into_iter()
            .filter_map(|(name, mapped)| {
                let key = NameKey::of_name(&name.into());
                key.map(|key| (Box::from(key.as_bytes()), mapped))
            })
            .collect();
        Responder { names, view, style, metrics }
    }

    /// The counters, for what the server decides itself (rate limiting).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Answers the DNS message in `packet`, writing the response into `out`; with `slip`,
    /// the response carries no records and has TC set (rate limiting's truncated answer).
    /// Returns false when nothing should be sent: too short to hold a header, or itself a
    /// response (never answered, so that the server cannot be made to reflect traffic).
    pub fn respond(
        &self,
        packet: &[u8],
        transport: Transport,
        slip: bool,
        out: &mut Vec<u8>,
    ) -> bool {
        let mut decoder = BinDecoder::new(packet);
        let Ok(header) = Header::read(&mut decoder) else {
            return false;
        };
        if header.metadata.message_type == MessageType::Response {
            return false;
        }
        let request = &header.metadata;
        // The question as sent, echoed in the response; empty when there is none to echo.
        let mut question: &[u8] = &[];
        let mut name_length = 0;
        let mut parse_question = |decoder: &mut BinDecoder<'_>| {
            let start = decoder.index();
            let query = Query::read(decoder).ok()?;
            question = &packet[start..decoder.index()];
            // Type and class follow the name.
            name_length = question.len() - 4;
            Some(query)
        };
        let mut reply = if request.op_code != OpCode::Query {
            // Other opcodes lay their sections out differently: echo the question if it
            // reads as one, and say NOTIMP.
            if header.counts.queries == 1 {
                parse_question(&mut decoder);
            }
            self.error(request, ResponseCode::NotImp, None, transport)
        } else if header.counts.queries != 1 {
            self.error(request, ResponseCode::FormErr, None, transport)
        } else if let Some((wire, mapped)) = self.mapped_question(packet) {
            // The common case, read without parsing the name: a mapped name, class IN.
            question = &packet[HEADER_LENGTH..wire.end];
            name_length = wire.name.as_bytes().len();
            let asked = Asked {
                class_in: true,
                mapped: Some(mapped),
                query_type: RecordType::from(wire.query_type),
                name_length,
            };
            match skip_to(&mut decoder, wire.end).and_then(|()| read_edns(&mut decoder, &header)) {
                Ok(edns) => {
                    self.reply_to(request, Some(asked), edns.as_ref(), transport, now_unix_us())
                }
                Err(_) => self.error(request, ResponseCode::FormErr, None, transport),
            }
        } else {
            match parse_question(&mut decoder) {
                None => self.error(request, ResponseCode::FormErr, None, transport),
                Some(query) => match read_edns(&mut decoder, &header) {
                    Ok(edns) => {
                        self.reply(request, Some(&query), edns.as_ref(), transport, now_unix_us())
                    }
                    Err(_) => self.error(request, ResponseCode::FormErr, None, transport),
                },
            }
        };
        if slip {
            reply.answers.clear();
            reply.truncated = true;
        }
        let truncated = wire::encode(&reply, question, name_length, self.style.compress, out);
        self.metrics.answered(reply.metadata.response_code);
        if truncated && !slip {
            self.metrics.truncated();
        }
        true
    }

    /// The question of `packet` and the mapping its name has, when it is read the quick way
    /// (see [`read_question`]), names a mapped name and asks class IN; `None` for anything
    /// else, which [`Responder::reply`] decides after hickory has parsed the question, so
    /// that errors and unmapped names answer exactly as they always have.
    fn mapped_question(&self, packet: &[u8]) -> Option<(WireQuestion, &MappedName)> {
        let wire = read_question(packet)?;
        if wire.query_class != u16::from(DNSClass::IN) {
            return None;
        }
        let mapped = self.names.get(wire.name.as_bytes())?;
        Some((wire, mapped))
    }

    /// Decides the response to a query with `query` as its only question (`None`: the query
    /// did not have exactly one) at `now_us` (Unix µs).
    pub fn reply(
        &self,
        request: &Metadata,
        query: Option<&Query>,
        edns: Option<&Edns>,
        transport: Transport,
        now_us: i64,
    ) -> Reply {
        let asked = query.map(|query| {
            let key = NameKey::of_name(query.name());
            let key = key.as_ref().map_or(&[][..], NameKey::as_bytes);
            Asked {
                class_in: query.query_class() == DNSClass::IN,
                mapped: self.names.get(key),
                query_type: query.query_type(),
                name_length: key.len(),
            }
        });
        self.reply_to(request, asked, edns, transport, now_us)
    }

    /// [`Responder::reply`] once the name is looked up.
    fn reply_to(
        &self,
        request: &Metadata,
        asked: Option<Asked<'_>>,
        edns: Option<&Edns>,
        transport: Transport,
        now_us: i64,
    ) -> Reply {
        if request.op_code != OpCode::Query {
            return self.error(request, ResponseCode::NotImp, edns, transport);
        }
        if edns.is_some_and(|edns| edns.version() > 0) {
            return self.error(request, ResponseCode::BADVERS, edns, transport);
        }
        let Some(asked) = asked else {
            return self.error(request, ResponseCode::FormErr, edns, transport);
        };
        let mut reply = self.error(request, ResponseCode::NoError, edns, transport);
        if !asked.class_in {
            reply.metadata.response_code = ResponseCode::Refused;
            return reply;
        }
        let Some(mapped) = asked.mapped else {
            reply.metadata.response_code = ResponseCode::NXDomain;
            reply.metadata.authoritative = self.style.authoritative;
            return reply;
        };
        let loaded = self.view.group(mapped.group);
        let group = loaded.as_ref().and_then(|slot| slot.as_deref());
        let Some(group) = group.filter(|group| group.ready) else {
            reply.metadata.response_code = ResponseCode::ServFail;
            return reply;
        };
        reply.metadata.authoritative = self.style.authoritative;
        if asked.query_type == RecordType::ANY && transport == Transport::Udp {
            reply.answers.push(Answer::Rfc8482);
            return reply;
        }
        let owner = if self.style.compress { 2 } else { asked.name_length };
        let budget = Budget {
            bytes: wire::answer_room(reply.limit, asked.name_length, edns.is_some()),
            owner,
            answers: self.style.max_answers,
        };
        let picked = pick(asked.query_type, mapped, group, budget, now_us);
        reply.answers = picked.answers;
        reply.truncated = picked.full == Some(Full::Size);
        reply
    }

    /// A reply with `code` and no records.
    fn error(
        &self,
        request: &Metadata,
        code: ResponseCode,
        edns: Option<&Edns>,
        transport: Transport,
    ) -> Reply {
        let mut metadata = Metadata::response_from_request(request);
        metadata.response_code = code;
        let limit = match (transport, edns) {
            (Transport::Tcp, _) => u16::MAX,
            (Transport::Udp, None) => CLASSIC_UDP_LIMIT,
            (Transport::Udp, Some(edns)) => {
                edns.max_payload().clamp(CLASSIC_UDP_LIMIT, UDP_PAYLOAD_LIMIT)
            }
        };
        let edns = edns.map(|request| EdnsReply {
            max_payload: UDP_PAYLOAD_LIMIT,
            dnssec_ok: request.flags().dnssec_ok,
        });
        Reply { metadata, answers: Vec::new(), truncated: false, edns, limit }
    }
}

/// A query's one question, its name looked up.
struct Asked<'a> {
    class_in: bool,
    /// What the name maps to; `None`: no mapping (NXDOMAIN).
    mapped: Option<&'a MappedName>,
    query_type: RecordType,
    /// The name's length in a message, uncompressed.
    name_length: usize,
}

/// What is left for the answer section: bytes under the size limit, records under
/// `max_answers`.
#[derive(Debug, Clone, Copy)]
struct Budget {
    bytes: usize,
    /// The length of each record's owner name.
    owner: usize,
    answers: usize,
}

/// Why no more records were taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    /// The next one did not fit in the message: the response is truncated (TC).
    Size,
    /// `max_answers` were taken: a complete answer by the operator's choice.
    Count,
}

impl Budget {
    /// Counts `answer` in if it fits.
    fn take(&mut self, answer: &Answer) -> Result<(), Full> {
        if self.answers == 0 {
            return Err(Full::Count);
        }
        let length = wire::record_length(self.owner, answer);
        if length > self.bytes {
            return Err(Full::Size);
        }
        self.bytes -= length;
        self.answers -= 1;
        Ok(())
    }
}

/// The records picked for one response.
struct Picked {
    answers: Vec<Answer>,
    budget: Budget,
    /// Set once a record was refused, and why.
    full: Option<Full>,
    /// Seeded once per query from the thread's generator: each draw from the thread's
    /// own would go through a thread-local lookup.
    rng: fastrand::Rng,
}

impl Picked {
    /// Takes the records `list` gives (`record_of` skips an entry with `None`), starting at a
    /// random position and wrapping around, until the budget is spent. Each entry is
    /// equally likely to come first, so load spreads over the whole group while a query
    /// looks at only as many entries as it answers (plus any expired ones on the way).
    fn rotate<T>(&mut self, list: &[T], record_of: impl Fn(&T) -> Option<Answer>) {
        if self.full.is_some() || list.is_empty() {
            return;
        }
        let start = self.rng.usize(..list.len());
        for entry in list[start..].iter().chain(&list[..start]) {
            let Some(answer) = record_of(entry) else { continue };
            if let Err(full) = self.budget.take(&answer) {
                self.full = Some(full);
                return;
            }
            self.answers.push(answer);
        }
    }
}

/// The records for a query of `query_type` within `budget`: live members of the asked
/// family with the seconds each has left, or, when the group has no live member at all, the
/// fallback addresses of that family with TTL 0. Shuffled, so that clients spread over the
/// members. ANY (over TCP) gets both families; any other type gets none (NODATA).
fn pick(
    query_type: RecordType,
    mapped: &MappedName,
    group: &GroupMembers,
    budget: Budget,
    now_us: i64,
) -> Picked {
    let want_v4 = matches!(query_type, RecordType::A | RecordType::ANY);
    let want_v6 = matches!(query_type, RecordType::AAAA | RecordType::ANY);
    let live = group.has_live_member(now_us);
    let (v4, v6) = if live {
        (group.v4.len(), group.v6.len())
    } else {
        (mapped.fallback_v4.len(), mapped.fallback_v6.len())
    };
    let candidates = usize::from(want_v4) * v4 + usize::from(want_v6) * v6;
    // Room for as many A records as could fit: one allocation, whatever the group's size.
    let most = budget.answers.min(budget.bytes / (budget.owner + 14)).min(candidates);
    let rng = fastrand::Rng::with_seed(fastrand::u64(..));
    let mut picked = Picked { answers: Vec::with_capacity(most), budget, full: None, rng };
    if live {
        let member = |ip: IpAddr, expires: i64| {
            (expires > now_us).then(|| Answer::Address { ip, ttl: ttl(expires, now_us) })
        };
        if want_v4 {
            picked.rotate(&group.v4, |&(ip, expires)| member(ip.into(), expires));
        }
        if want_v6 {
            picked.rotate(&group.v6, |&(ip, expires)| member(ip.into(), expires));
        }
    } else {
        let fallback = |ip: IpAddr| Some(Answer::Address { ip, ttl: 0 });
        if want_v4 {
            picked.rotate(&mapped.fallback_v4, |&ip| fallback(ip.into()));
        }
        if want_v6 {
            picked.rotate(&mapped.fallback_v6, |&ip| fallback(ip.into()));
        }
    }
    picked.rng.shuffle(&mut picked.answers);
    picked
}

/// Whole seconds before `expires_us`, at least 1 for a live member.
fn ttl(expires_us: i64, now_us: i64) -> u32 {
    let seconds = (expires_us - now_us) / 1_000_000;
    seconds.clamp(1, i64::from(u32::MAX)) as u32
}

/// Current Unix time in µs.
pub fn now_unix_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Moves `decoder` on to `offset` of its message.
fn skip_to(decoder: &mut BinDecoder<'_>, offset: usize) -> Result<(), DecodeError> {
    decoder.read_slice(offset.saturating_sub(decoder.index()))?;
    Ok(())
}

/// Reads the records after the question, keeping only the OPT record.
fn read_edns(decoder: &mut BinDecoder<'_>, header: &Header) -> Result<Option<Edns>, DecodeError> {
    let counts = header.counts;
    if counts.answers == 0 && counts.authorities == 0 && counts.additionals == 0 {
        return Ok(None);
    }
    let op_code = header.metadata.op_code;
    Message::read_records(decoder, usize::from(counts.answers), false, op_code)?;
    Message::read_records(decoder, usize::from(counts.authorities), false, op_code)?;
    let (_, edns, _) =
        Message::read_records(decoder, usize::from(counts.additionals), true, op_code)?;
    Ok(edns)
}

/// The same rules served by hickory-server's own `Server`, which encodes with its defaults
/// (names compressed, UDP size as the client advertises). The plugin serves through its own
/// loops instead (see `server`), which honour `compress` and the UDP size limit.
#[async_trait::async_trait]
impl RequestHandler for Responder {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let query = match request.queries.queries() {
            [query] => Some(query.original()),
            _ => None,
        };
        let transport = match request.protocol() {
            Protocol::Udp => Transport::Udp,
            _ => Transport::Tcp,
        };
        let reply =
            self.reply(&request.metadata, query, request.edns.as_ref(), transport, now_unix_us());
        let records: Vec<Record> = match query {
            Some(query) => reply
                .answers
                .iter()
                .map(|answer| {
                    let (rdata, ttl) = match *answer {
                        Answer::Address { ip: IpAddr::V4(ip), ttl } => (RData::A(A(ip)), ttl),
                        Answer::Address { ip: IpAddr::V6(ip), ttl } => (RData::AAAA(AAAA(ip)), ttl),
                        Answer::Rfc8482 => (
                            RData::HINFO(HINFO::new("RFC8482".to_owned(), String::new())),
                            RFC8482_TTL,
                        ),
                    };
                    Record::from_rdata(query.name().clone(), ttl, rdata)
                })
                .collect(),
            None => Vec::new(),
        };
        let edns = reply.edns.map(|reply| {
            let mut edns = Edns::new();
            edns.set_max_payload(reply.max_payload);
            edns.set_version(0);
            edns.set_dnssec_ok(reply.dnssec_ok);
            edns
        });
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let mut metadata = reply.metadata;
        metadata.truncation |= reply.truncated;
        let response = builder.build(metadata, records.iter(), [], [], []);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!("could not send a DNS response: {error}");
                let mut metadata = reply.metadata;
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_server::proto::op::Message;
    use hickory_server::proto::rr::Name;
    use rgap_plugin_api::{GroupSnapshot, Member, MemberList};

    use super::*;
    use crate::view::Publisher;

    const NAME: &str = "worker.example.com.";
    const HOUR_US: i64 = 3_600_000_000;

    fn member(ip: IpAddr, expires_at_unix_us: i64) -> Member {
        let address = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        Member { address, expires_at_unix_us }
    }

    /// A responder for NAME → group 1 (fallbacks 192.0.2.1 and 2001:db8::1), with the group
    /// published as `members` (`None`: never reported).
    fn responder(members: Option<(&[Member], bool)>, compress: bool) -> (Responder, Publisher) {
        responder_with(members, compress, usize::MAX)
    }

    /// As [`responder`], with `max_answers`.
    fn responder_with(
        members: Option<(&[Member], bool)>,
        compress: bool,
        max_answers: usize,
    ) -> (Responder, Publisher) {
        let name = LowerName::new(&Name::from_ascii(NAME).unwrap());
        let mapped = MappedName {
            key: NAME.to_owned(),
            group: 1,
            fallback_v4: vec![Ipv4Addr::new(192, 0, 2, 1)],
            fallback_v6: vec!["2001:db8::1".parse().unwrap()],
        };
        let mut publisher = Publisher::new(HashSet::from([1]));
        if let Some((members, ready)) = members {
            let members = MemberList::new(members.to_vec().into());
            let snapshot = GroupSnapshot {
                id: 1,
                ready,
                revision: 1,
                membership_revision: 1,
                members: &members,
            };
            publisher.update(&[snapshot]);
        }
        let names = HashMap::from([(name, mapped)]);
        let style = Style { compress, authoritative: true, max_answers };
        (Responder::new(names, publisher.published(), style, Metrics::none()), publisher)
    }

    fn query(name: &str, record_type: RecordType, edns_payload: Option<u16>) -> Message {
        let mut message = Message::query();
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
        if let Some(payload) = edns_payload {
            let mut edns = Edns::new();
            edns.set_max_payload(payload);
            message.set_edns(edns);
        }
        message
    }

    fn ask(responder: &Responder, query: &Message, transport: Transport) -> (Message, usize) {
        let mut out = Vec::new();
        assert!(responder.respond(&query.to_vec().unwrap(), transport, false, &mut out));
        (Message::from_vec(&out).expect("a well-formed response"), out.len())
    }

    fn addresses(message: &Message) -> HashSet<IpAddr> {
        message
            .answers
            .iter()
            .map(|record| match &record.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                other => panic!("unexpected record {other:?}"),
            })
            .collect()
    }

    fn many_members(count: u32, expires: i64) -> Vec<Member> {
        (0..count).map(|i| member(Ipv4Addr::from(0x0A00_0000 + i).into(), expires)).collect()
    }

    #[test]
    fn answers_echo_the_query_and_carry_the_members() {
        let now = now_unix_us();
        let members = [
            member("10.0.0.1".parse().unwrap(), now + 9_500_000),
            member("10.0.0.2".parse().unwrap(), now + HOUR_US),
            member("fd00::1".parse().unwrap(), now + HOUR_US),
            // Past its expiry but not yet removed by the listener: not served.
            member("10.0.0.3".parse().unwrap(), now - 1),
        ];
        let (responder, _publisher) = responder(Some((&members, true)), false);
        let mut request = query("Worker.EXAMPLE.com.", RecordType::A, None);
        request.metadata.recursion_desired = true;
        let (response, _) = ask(&responder, &request, Transport::Udp);
        assert_eq!(response.metadata.id, request.metadata.id);
        assert_eq!(response.metadata.message_type, MessageType::Response);
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.metadata.authoritative);
        assert!(response.metadata.recursion_desired, "RD is copied");
        assert!(!response.metadata.recursion_available);
        assert_eq!(response.queries, request.queries);
        assert_eq!(
            addresses(&response),
            HashSet::from(["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()])
        );
        for record in &response.answers {
            assert_eq!(record.name.to_ascii(), "Worker.EXAMPLE.com.");
            let expected = if record.data == RData::A(A::new(10, 0, 0, 1)) { 9 } else { 3599 };
            assert!((expected..=expected + 1).contains(&record.ttl), "{record}");
        }
        let (aaaa, _) = ask(&responder, &query(NAME, RecordType::AAAA, None), Transport::Tcp);
        assert_eq!(addresses(&aaaa), HashSet::from(["fd00::1".parse().unwrap()]));
        let (any, _) = ask(&responder, &query(NAME, RecordType::ANY, None), Transport::Tcp);
        assert_eq!(any.answers.len(), 3, "ANY over TCP: every A and AAAA");
        let (mx, _) = ask(&responder, &query(NAME, RecordType::MX, None), Transport::Udp);
        assert_eq!(mx.metadata.response_code, ResponseCode::NoError);
        assert!(mx.answers.is_empty());
    }

    #[test]
    fn codes_for_unready_unknown_and_unmapped() {
        let (never_reported, _p1) = responder(None, false);
        let (unready, _p2) = responder(Some((&[], false)), false);
        for responder in [&never_reported, &unready] {
            let (response, _) = ask(responder, &query(NAME, RecordType::A, None), Transport::Udp);
            assert_eq!(response.metadata.response_code, ResponseCode::ServFail);
            assert!(!response.metadata.authoritative);
        }
        let (ready, _p3) = responder(Some((&[], true)), false);
        let (nx, _) =
            ask(&ready, &query("other.example.com.", RecordType::A, None), Transport::Udp);
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert!(nx.metadata.authoritative);
        let (fallback, _) = ask(&ready, &query(NAME, RecordType::AAAA, None), Transport::Udp);
        assert_eq!(addresses(&fallback), HashSet::from(["2001:db8::1".parse().unwrap()]));
        assert_eq!(fallback.answers[0].ttl, 0);
    }

    #[test]
    fn malformed_and_unusual_messages() {
        let (responder, _publisher) = responder(Some((&[], true)), false);
        let mut out = Vec::new();
        // Too short for a header, and responses: nothing is sent.
        assert!(!responder.respond(&[1, 2, 3], Transport::Udp, false, &mut out));
        let mut response = query(NAME, RecordType::A, None);
        response.metadata.message_type = MessageType::Response;
        assert!(!responder.respond(&response.to_vec().unwrap(), Transport::Udp, false, &mut out));

        // Two questions, or none: FORMERR.
        let mut two = query(NAME, RecordType::A, None);
        two.add_query(Query::query(Name::from_ascii(NAME).unwrap(), RecordType::AAAA));
        let (reply, _) = ask(&responder, &two, Transport::Udp);
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        let mut none = query(NAME, RecordType::A, None);
        none.queries.clear();
        assert_eq!(
            ask(&responder, &none, Transport::Udp).0.metadata.response_code,
            ResponseCode::FormErr
        );

        // A header promising a question that is cut short: FORMERR, same id.
        let mut cut = query(NAME, RecordType::A, None).to_vec().unwrap();
        cut.truncate(20);
        assert!(responder.respond(&cut, Transport::Udp, false, &mut out));
        let reply = Message::from_vec(&out).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(&out[..2], &cut[..2]);

        // Another opcode: NOTIMP, question echoed.
        let mut status = query(NAME, RecordType::A, None);
        status.metadata.op_code = OpCode::Status;
        let (reply, _) = ask(&responder, &status, Transport::Udp);
        assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
        assert_eq!(reply.metadata.op_code, OpCode::Status);
        assert_eq!(reply.queries.len(), 1);

        // Class CH: REFUSED.
        let mut chaos = query(NAME, RecordType::A, None);
        chaos.queries[0].set_query_class(DNSClass::CH);
        assert_eq!(
            ask(&responder, &chaos, Transport::Udp).0.metadata.response_code,
            ResponseCode::Refused
        );
    }

    #[test]
    fn edns_version_and_flags() {
        let (responder, _publisher) = responder(Some((&[], true)), false);
        let mut request = query(NAME, RecordType::A, Some(4096));
        request.edns.as_mut().unwrap().set_dnssec_ok(true);
        let (reply, _) = ask(&responder, &request, Transport::Udp);
        let edns = reply.edns.expect("OPT in the reply");
        assert_eq!(edns.max_payload(), UDP_PAYLOAD_LIMIT);
        assert_eq!(edns.version(), 0);
        assert!(edns.flags().dnssec_ok, "DO is copied");

        request.edns.as_mut().unwrap().set_version(1);
        let (reply, _) = ask(&responder, &request, Transport::Udp);
        assert_eq!(u16::from(reply.metadata.response_code), 16, "BADVERS");
        assert_eq!(reply.edns.map(|edns| edns.version()), Some(0));
        assert!(reply.answers.is_empty());
    }

    #[test]
    fn truncation_fills_the_limit_and_keeps_opt() {
        let members = many_members(300, now_unix_us() + HOUR_US);
        for compress in [false, true] {
            let (responder, _publisher) = responder(Some((&members, true)), compress);
            for (payload, limit) in
                [(None, 512), (Some(512), 512), (Some(1232), 1232), (Some(65_000), 1232)]
            {
                let (reply, length) =
                    ask(&responder, &query(NAME, RecordType::A, payload), Transport::Udp);
                assert!(reply.metadata.truncation, "{payload:?}");
                assert!(length <= limit, "{length} > {limit}");
                let record = if compress { 2 + 10 + 4 } else { NAME.len() + 1 + 10 + 4 };
                assert!(length + record > limit, "room for one more answer: {length} of {limit}");
                assert_eq!(reply.edns.is_some(), payload.is_some());
                assert_eq!(addresses(&reply).len(), reply.answers.len(), "no duplicates");
            }
            let (whole, _) =
                ask(&responder, &query(NAME, RecordType::A, Some(1232)), Transport::Tcp);
            assert!(!whole.metadata.truncation);
            assert_eq!(whole.answers.len(), 300);
        }
    }

    #[test]
    fn compression_points_answers_at_the_question() {
        let members = many_members(3, now_unix_us() + HOUR_US);
        let (plain, _p1) = responder(Some((&members, true)), false);
        let (compressed, _p2) = responder(Some((&members, true)), true);
        let request = query(NAME, RecordType::A, None);
        let (plain_reply, plain_length) = ask(&plain, &request, Transport::Udp);
        let (compressed_reply, compressed_length) = ask(&compressed, &request, Transport::Udp);
        assert_eq!(addresses(&plain_reply), addresses(&compressed_reply));
        let name_length = NAME.len() + 1;
        assert_eq!(plain_length - compressed_length, 3 * (name_length - 2));
    }

    #[test]
    fn ttl_is_whole_seconds_and_at_least_one() {
        assert_eq!(ttl(10_999_999, 0), 10);
        assert_eq!(ttl(1_000_000, 0), 1);
        assert_eq!(ttl(999_999, 0), 1);
        assert_eq!(ttl(1, 0), 1);
    }

    /// The same rules run under hickory-server's own `Server`.
    #[test]
    fn hickory_server_runs_the_same_rules() {
        let members = [member(Ipv6Addr::LOCALHOST.into(), now_unix_us() + HOUR_US)];
        let (responder, _publisher) = responder(Some((&members, true)), false);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let reply = runtime.block_on(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let address = socket.local_addr().unwrap();
            let mut server = hickory_server::Server::new(responder);
            server.register_socket(socket);
            let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let request = query(NAME, RecordType::AAAA, Some(1232)).to_vec().unwrap();
            client.send_to(&request, address).await.unwrap();
            let mut buffer = vec![0; 2048];
            let length =
                tokio::time::timeout(std::time::Duration::from_secs(10), client.recv(&mut buffer))
                    .await
                    .expect("an answer from hickory's Server")
                    .unwrap();
            server.shutdown_gracefully().await.unwrap();
            Message::from_vec(&buffer[..length]).unwrap()
        });
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.metadata.authoritative);
        assert_eq!(addresses(&reply), HashSet::from([IpAddr::V6(Ipv6Addr::LOCALHOST)]));
        assert!(reply.edns.is_some());
    }

    /// Whether `list` is one rotation of `all` (a window of consecutive entries, wrapping).
    fn is_window_of(list: &[IpAddr], all: &[IpAddr]) -> bool {
        let set: HashSet<&IpAddr> = list.iter().collect();
        (0..all.len())
            .any(|start| (0..list.len()).all(|i| set.contains(&all[(start + i) % all.len()])))
    }

    #[test]
    fn udp_answers_of_a_huge_group_are_a_random_window_that_fills_the_limit() {
        let now = now_unix_us();
        let members = many_members(100_000, now + HOUR_US);
        let all: Vec<IpAddr> =
            (0..100_000u32).map(|i| Ipv4Addr::from(0x0A00_0000 + i).into()).collect();
        let (responder, _publisher) = responder(Some((&members, true)), false);
        let mut firsts = HashSet::new();
        for _ in 0..20 {
            let (reply, length) =
                ask(&responder, &query(NAME, RecordType::A, Some(1232)), Transport::Udp);
            assert!(reply.metadata.truncation, "more members than fit: TC");
            let record = NAME.len() + 1 + 10 + 4;
            assert!(length <= 1232 && length + record > 1232, "filled: {length} bytes");
            let got: Vec<IpAddr> = addresses(&reply).into_iter().collect();
            assert_eq!(got.len(), reply.answers.len(), "no duplicates");
            assert!(is_window_of(&got, &all), "consecutive members, wrapping");
            firsts.insert(got.iter().min().copied());
        }
        assert!(firsts.len() > 10, "windows start at random places: {firsts:?}");
        // TCP takes as many as 64 KiB holds.
        let (tcp, length) = ask(&responder, &query(NAME, RecordType::A, None), Transport::Tcp);
        assert!(tcp.metadata.truncation);
        let record = NAME.len() + 1 + 10 + 4;
        assert!(length <= 65_535 && length + record > 65_535, "filled: {length} bytes");
    }

    #[test]
    fn expired_members_are_skipped_by_the_window() {
        let now = now_unix_us();
        // Every other member past its expiry (the listener has not swept it yet).
        let members: Vec<Member> = (0..1000u32)
            .map(|i| {
                let expires = if i % 2 == 0 { now + HOUR_US } else { now - 1 };
                member(Ipv4Addr::from(0x0A00_0000 + i).into(), expires)
            })
            .collect();
        let (responder, _publisher) = responder(Some((&members, true)), true);
        for _ in 0..10 {
            let (reply, _) = ask(&responder, &query(NAME, RecordType::A, None), Transport::Udp);
            assert!(reply.metadata.truncation);
            assert!(!reply.answers.is_empty());
            for ip in addresses(&reply) {
                let IpAddr::V4(v4) = ip else { panic!("{ip}") };
                assert_eq!((u32::from(v4) - 0x0A00_0000) % 2, 0, "{ip} has expired");
            }
        }
    }

    #[test]
    fn max_answers_caps_both_transports_without_tc() {
        let now = now_unix_us();
        let members = many_members(50, now + HOUR_US);
        let (responder, _publisher) = responder_with(Some((&members, true)), false, 3);
        for transport in [Transport::Udp, Transport::Tcp] {
            let (reply, _) = ask(&responder, &query(NAME, RecordType::A, None), transport);
            assert_eq!(reply.answers.len(), 3, "{transport:?}");
            assert!(!reply.metadata.truncation, "a cap by choice is a complete answer");
        }
        // Fewer members than the cap: all of them.
        let few = many_members(2, now + HOUR_US);
        let (responder, _publisher) = responder_with(Some((&few, true)), false, 3);
        let (reply, _) = ask(&responder, &query(NAME, RecordType::A, None), Transport::Udp);
        assert_eq!(reply.answers.len(), 2);
        // A cap larger than what fits: what fits, with TC.
        let (responder, _publisher) = responder_with(Some((&members, true)), false, 40);
        let (reply, length) = ask(&responder, &query(NAME, RecordType::A, None), Transport::Udp);
        assert!(reply.metadata.truncation);
        assert!(reply.answers.len() < 40 && length <= 512);
    }

    #[test]
    fn any_over_udp_is_one_rfc8482_hinfo_record() {
        let now = now_unix_us();
        let mut members = many_members(200, now + HOUR_US);
        members.push(member("fd00::1".parse().unwrap(), now + HOUR_US));
        let (responder, _publisher) = responder(Some((&members, true)), false);
        let request = query("WORKER.example.com.", RecordType::ANY, Some(1232));
        let (reply, length) = ask(&responder, &request, Transport::Udp);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(!reply.metadata.truncation);
        assert_eq!(reply.answers.len(), 1);
        let record = &reply.answers[0];
        assert_eq!(record.name.to_ascii(), "WORKER.example.com.");
        assert_eq!(record.ttl, RFC8482_TTL);
        let RData::HINFO(hinfo) = &record.data else { panic!("{record}") };
        assert_eq!((&*hinfo.cpu, &*hinfo.os), (&b"RFC8482"[..], &b""[..]));
        assert!(length < request.to_vec().unwrap().len() + 40, "no amplification: {length}");
        // Over TCP ANY still gets the addresses (as many as fit), and unmapped ANY is NXDOMAIN.
        let (tcp, _) = ask(&responder, &query(NAME, RecordType::ANY, None), Transport::Tcp);
        assert_eq!(tcp.answers.len(), 201);
        let (nx, _) =
            ask(&responder, &query("x.example.com.", RecordType::ANY, None), Transport::Udp);
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn a_slip_is_truncated_with_no_records() {
        let members = many_members(3, now_unix_us() + HOUR_US);
        let (responder, _publisher) = responder(Some((&members, true)), false);
        let request = query(NAME, RecordType::A, Some(1232));
        let mut out = Vec::new();
        assert!(responder.respond(&request.to_vec().unwrap(), Transport::Udp, true, &mut out));
        let reply = Message::from_vec(&out).unwrap();
        assert!(reply.metadata.truncation);
        assert!(reply.answers.is_empty());
        assert_eq!(reply.queries, request.queries, "the question is echoed");
        assert!(reply.edns.is_some(), "the OPT record stays");
    }

    /// This thread's CPU time, in ns: unlike the wall clock, not inflated while other
    /// processes have the core.
    fn thread_cpu_ns() -> u128 {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec, which `now` is.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        now.tv_sec as u128 * 1_000_000_000 + now.tv_nsec as u128
    }

    /// The CPU cost of answering, without sockets: `respond` on a 20-member group and on a
    /// 100 000-member one, alternating, each timed (on the thread's CPU clock) over many
    /// queries. A measurement, run by hand:
    /// `cargo test --release -p rgap-output-dns -- --ignored --nocapture`
    /// (`RGAP_DNS_COST_MEMBERS=N` for one size only, e.g. under a profiler).
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn cost_of_an_answer_by_group_size() {
        let now = now_unix_us();
        let sizes: Vec<u32> = match std::env::var("RGAP_DNS_COST_MEMBERS") {
            Ok(size) => vec![size.parse().expect("a number of members")],
            Err(_) => vec![20, 100_000],
        };
        let groups: Vec<Vec<Member>> = sizes
            .iter()
            .map(|&size| {
                (0..size)
                    .map(|i| {
                        let ip: IpAddr = if i % 2 == 0 {
                            Ipv4Addr::from(0x0A00_0000 + i).into()
                        } else {
                            Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i)).into()
                        };
                        member(ip, now + HOUR_US)
                    })
                    .collect()
            })
            .collect();
        let responders: Vec<(Responder, Publisher)> =
            groups.iter().map(|members| responder(Some((members, true)), false)).collect();
        let mut out = Vec::with_capacity(1500);
        for edns in [None, Some(1232)] {
            // A and AAAA alternately.
            let queries: Vec<Vec<u8>> = [RecordType::A, RecordType::AAAA]
                .iter()
                .map(|&record_type| query(NAME, record_type, edns).to_vec().unwrap())
                .collect();
            let mut best = vec![(f64::MAX, 0); sizes.len()];
            for _round in 0..5 {
                for (index, (responder, _)) in responders.iter().enumerate() {
                    let started = thread_cpu_ns();
                    let count = 200_000;
                    let mut records = 0;
                    for i in 0..count {
                        assert!(responder.respond(
                            &queries[i % 2],
                            Transport::Udp,
                            false,
                            &mut out
                        ));
                        records += usize::from(u16::from_be_bytes([out[6], out[7]]));
                    }
                    let ns = (thread_cpu_ns() - started) as f64 / count as f64;
                    best[index] = (best[index].0.min(ns), records / count);
                }
            }
            for (size, (ns, records)) in sizes.iter().zip(&best) {
                println!(
                    "respond(), EDNS {edns:?}, best of 5 rounds of 200 000: {size} members: \
                     {ns:.0} ns ({records} records per answer)"
                );
                assert!(*records > 0);
            }
        }
    }
}
