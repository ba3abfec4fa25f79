//! The answers: one DNS query in, one response out, decided from the published [`View`].
//!
//! [`Responder::reply`] holds every rule (which names, which codes, which records and TTLs);
//! [`Responder::respond`] wraps it for the plugin's own UDP and TCP loops, from wire bytes to
//! wire bytes with an encoder it configures (name compression, UDP size); and the
//! [`RequestHandler`] impl lets hickory-server's `Server` run the same rules.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_server::proto::rr::rdata::{A, AAAA};
use hickory_server::proto::rr::{DNSClass, LowerName, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder, DecodeError};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::spec::MappedName;
use crate::view::{GroupMembers, View};
use crate::wire;

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

/// One A or AAAA record: the address and its TTL; the owner is the question's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub ip: IpAddr,
    pub ttl: u32,
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
    /// Present when the query had EDNS.
    pub edns: Option<EdnsReply>,
    /// Maximum size of the encoded response.
    pub limit: u16,
}

/// Answers queries for the mapped names.
pub struct Responder {
    names: HashMap<LowerName, MappedName>,
    view: Arc<ArcSwap<View>>,
    compress: bool,
    authoritative: bool,
}

impl Responder {
    pub fn new(
        names: HashMap<LowerName, MappedName>,
        view: Arc<ArcSwap<View>>,
        compress: bool,
        authoritative: bool,
    ) -> Self {
        Responder { names, view, compress, authoritative }
    }

    /// Answers the DNS message in `packet`, writing the response into `out`. Returns false
    /// when nothing should be sent: too short to hold a header, or itself a response (never
    /// answered, so that the server cannot be made to reflect traffic).
    pub fn respond(&self, packet: &[u8], transport: Transport, out: &mut Vec<u8>) -> bool {
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
        let mut read_question = |decoder: &mut BinDecoder<'_>| {
            let start = decoder.index();
            let query = Query::read(decoder).ok()?;
            question = &packet[start..decoder.index()];
            // Type and class follow the name.
            name_length = question.len() - 4;
            Some(query)
        };
        let reply = if request.op_code != OpCode::Query {
            // Other opcodes lay their sections out differently: echo the question if it
            // reads as one, and say NOTIMP.
            if header.counts.queries == 1 {
                read_question(&mut decoder);
            }
            self.error(request, ResponseCode::NotImp, None, transport)
        } else if header.counts.queries != 1 {
            self.error(request, ResponseCode::FormErr, None, transport)
        } else {
            match read_question(&mut decoder) {
                None => self.error(request, ResponseCode::FormErr, None, transport),
                Some(query) => match read_edns(&mut decoder, &header) {
                    Ok(edns) => {
                        self.reply(request, Some(&query), edns.as_ref(), transport, now_unix_us())
                    }
                    Err(_) => self.error(request, ResponseCode::FormErr, None, transport),
                },
            }
        };
        wire::encode(&reply, question, name_length, self.compress, out);
        true
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
        if request.op_code != OpCode::Query {
            return self.error(request, ResponseCode::NotImp, edns, transport);
        }
        if edns.is_some_and(|edns| edns.version() > 0) {
            return self.error(request, ResponseCode::BADVERS, edns, transport);
        }
        let Some(query) = query else {
            return self.error(request, ResponseCode::FormErr, edns, transport);
        };
        let mut reply = self.error(request, ResponseCode::NoError, edns, transport);
        if query.query_class() != DNSClass::IN {
            reply.metadata.response_code = ResponseCode::Refused;
            return reply;
        }
        let Some(mapped) = self.names.get(&LowerName::new(query.name())) else {
            reply.metadata.response_code = ResponseCode::NXDomain;
            reply.metadata.authoritative = self.authoritative;
            return reply;
        };
        let view = self.view.load();
        let Some(group) = view.group(mapped.group).filter(|group| group.ready) else {
            reply.metadata.response_code = ResponseCode::ServFail;
            return reply;
        };
        reply.metadata.authoritative = self.authoritative;
        reply.answers = answers(query.query_type(), mapped, group, now_us);
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
        Reply { metadata, answers: Vec::new(), edns, limit }
    }
}

/// The records for a query of `query_type`: the live members of the asked family with the
/// seconds each has left, or, when the group has no live member at all, the fallback
/// addresses of that family with TTL 0. Shuffled, so that clients spread over the members.
/// ANY gets both families; any other type gets none (NODATA).
fn answers(
    query_type: RecordType,
    mapped: &MappedName,
    group: &GroupMembers,
    now_us: i64,
) -> Vec<Answer> {
    let want_v4 = matches!(query_type, RecordType::A | RecordType::ANY);
    let want_v6 = matches!(query_type, RecordType::AAAA | RecordType::ANY);
    let mut answers = Vec::new();
    if group.has_live_member(now_us) {
        let live = |ip: IpAddr, expires: i64| {
            (expires > now_us).then(|| Answer { ip, ttl: ttl(expires, now_us) })
        };
        if want_v4 {
            answers.extend(group.v4.iter().filter_map(|&(ip, expires)| live(ip.into(), expires)));
        }
        if want_v6 {
            answers.extend(group.v6.iter().filter_map(|&(ip, expires)| live(ip.into(), expires)));
        }
    } else {
        if want_v4 {
            answers
                .extend(mapped.fallback_v4.iter().map(|&ip| Answer { ip: IpAddr::V4(ip), ttl: 0 }));
        }
        if want_v6 {
            answers
                .extend(mapped.fallback_v6.iter().map(|&ip| Answer { ip: IpAddr::V6(ip), ttl: 0 }));
        }
    }
    fastrand::shuffle(&mut answers);
    answers
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

/// Reads the records after the question, keeping only the OPT record.
fn read_edns(decoder: &mut BinDecoder<'_>, header: &Header) -> Result<Option<Edns>, DecodeError> {
    let counts = header.counts;
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
                    let rdata = match answer.ip {
                        IpAddr::V4(ip) => RData::A(A(ip)),
                        IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
                    };
                    Record::from_rdata(query.name().clone(), answer.ttl, rdata)
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
        let response = builder.build(reply.metadata, records.iter(), [], [], []);
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
        (Responder::new(names, publisher.published(), compress, true), publisher)
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
        assert!(responder.respond(&query.to_vec().unwrap(), transport, &mut out));
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
        assert_eq!(any.answers.len(), 3);
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
        assert!(!responder.respond(&[1, 2, 3], Transport::Udp, &mut out));
        let mut response = query(NAME, RecordType::A, None);
        response.metadata.message_type = MessageType::Response;
        assert!(!responder.respond(&response.to_vec().unwrap(), Transport::Udp, &mut out));

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
        assert!(responder.respond(&cut, Transport::Udp, &mut out));
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
}
