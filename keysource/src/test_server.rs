//! A minimal in-process authoritative DNS server for tests.
//!
//! It serves one zone whose apex is the configured name, over UDP and TCP on
//! the same random port of 127.0.0.1, and answers the way a real authoritative
//! server does (echoed id, opcode, RD bit and question, AA set, EDNS echoed,
//! SOA in negative answers, TC plus TCP fallback for oversized UDP answers), so
//! that an unmodified stub resolver accepts it.
//!
//! The TXT record is served with a TTL of 300 s on purpose: a client that
//! caches would miss rotations, and the tests would notice.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::rdata::{SOA, TXT};
use hickory_resolver::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

/// TTL of the TXT record: long, so that any caching in a client shows up as a stale value.
const TXT_TTL: u32 = 300;
/// Negative-caching TTL (SOA minimum), short like a zone that rotates keys would use.
const NEGATIVE_TTL: u32 = 5;
/// Largest UDP payload we offer/accept via EDNS (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;
/// Maximum length of one character-string inside TXT RDATA (RFC 1035 §3.3).
const MAX_CHARACTER_STRING: usize = 255;

/// An authoritative DNS server for one TXT record; dropping it stops it.
pub struct TestDnsServer {
    addr: SocketAddr,
    state: Arc<State>,
    // Dropping the JoinSet aborts the UDP and TCP tasks (and, through the
    // TCP task's own JoinSet, every open connection).
    _tasks: JoinSet<()>,
}

struct State {
    apex: Name,
    /// `None`: the name does not exist (NXDOMAIN). Otherwise one entry per TXT record.
    values: Mutex<Option<Vec<Vec<u8>>>>,
    down: AtomicBool,
    answered: AtomicU64,
    serial: AtomicU32,
}

impl TestDnsServer {
    /// Starts serving a single TXT record `name` with `value`.
    ///
    /// Must be called inside a tokio runtime; the server runs on that runtime.
    pub async fn start(name: &str, value: &str) -> io::Result<Self> {
        let mut apex = Name::from_utf8(name).map_err(|e| io::Error::other(e.to_string()))?;
        apex.set_fqdn(true);
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let state = Arc::new(State {
            apex,
            values: Mutex::new(Some(vec![value.as_bytes().to_vec()])),
            down: AtomicBool::new(false),
            answered: AtomicU64::new(0),
            serial: AtomicU32::new(1),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(serve_udp(udp, state.clone()));
        tasks.spawn(serve_tcp(tcp, state.clone()));
        Ok(Self { addr, state, _tasks: tasks })
    }

    /// The address to query (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the record with a single TXT record holding `value` (a rotation).
    pub fn set_value(&self, value: &str) {
        self.set_values(&[value]);
    }

    /// Replaces the record with one TXT record per entry of `values`.
    ///
    /// Takes bytes so that tests can serve several records or non-UTF-8 data.
    pub fn set_values<V: AsRef<[u8]>>(&self, values: &[V]) {
        let values = values.iter().map(|v| v.as_ref().to_vec()).collect();
        *self.state.values.lock().unwrap() = Some(values);
        self.state.serial.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes the name altogether: queries get NXDOMAIN.
    pub fn remove_record(&self) {
        *self.state.values.lock().unwrap() = None;
        self.state.serial.fetch_add(1, Ordering::Relaxed);
    }

    /// `true`: silently drop every query, as if the server were unreachable.
    pub fn set_outage(&self, down: bool) {
        self.state.down.store(down, Ordering::Relaxed);
    }

    /// How many queries were answered (dropped ones during an outage do not count).
    pub fn queries(&self) -> u64 {
        self.state.answered.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for TestDnsServer {
    /// Leaves the value out: tests use real-looking secrets too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDnsServer")
            .field("addr", &self.addr)
            .field("name", &self.state.apex)
            .finish_non_exhaustive()
    }
}

/// Binds UDP and TCP on the same free port, retrying if the TCP side is taken.
async fn bind_pair() -> io::Result<(UdpSocket, TcpListener)> {
    let mut last_err = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no free port")))
}

async fn serve_udp(socket: UdpSocket, state: Arc<State>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(reply) = state.reply(&buf[..len], true) {
            // A lost reply is what UDP does anyway; the client retries.
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            connections.spawn(serve_tcp_connection(stream, state.clone()));
        }
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
}

/// DNS over TCP: each message is preceded by its length as a big-endian u16 (RFC 1035 §4.2.2).
async fn serve_tcp_connection(mut stream: TcpStream, state: Arc<State>) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut query = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        if let Some(reply) = state.reply(&query, false) {
            let Ok(len) = u16::try_from(reply.len()) else {
                return;
            };
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&reply);
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
    }
}

impl State {
    /// The wire-format reply to `query`, or `None` to stay silent.
    fn reply(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        if self.down.load(Ordering::Relaxed) {
            return None;
        }
        let response = match Message::from_vec(query) {
            Ok(request) if request.message_type == MessageType::Query => self.answer(&request),
            // Responses sent to us are ignored, like any server does.
            Ok(_) => return None,
            Err(_) if query.len() >= 2 => {
                let id = u16::from_be_bytes([query[0], query[1]]);
                Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
            }
            Err(_) => return None,
        };
        let mut bytes = response.to_vec().ok()?;
        let limit = if udp { usize::from(response.max_payload()) } else { usize::from(u16::MAX) };
        if bytes.len() > limit {
            // Too big for this transport: send the header and question with TC
            // set, so the client retries over TCP.
            let mut truncated = Message::new(response.id, MessageType::Response, response.op_code);
            truncated.metadata = response.metadata;
            truncated.metadata.truncation = true;
            truncated.add_queries(response.queries.iter().cloned());
            truncated.edns = response.edns.clone();
            bytes = truncated.to_vec().ok()?;
        }
        self.answered.fetch_add(1, Ordering::Relaxed);
        Some(bytes)
    }

    fn answer(&self, request: &Message) -> Message {
        let mut response = Message::response(request.id, request.op_code);
        response.metadata.recursion_desired = request.recursion_desired;
        response.metadata.checking_disabled = request.checking_disabled;
        response.add_queries(request.queries.iter().cloned());
        if let Some(edns) = &request.edns {
            let mut ours = Edns::new();
            ours.set_max_payload(EDNS_PAYLOAD.min(edns.max_payload()));
            response.edns = Some(ours);
        }
        if request.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return response;
        }
        let [query] = &request.queries[..] else {
            response.metadata.response_code = ResponseCode::FormErr;
            return response;
        };
        if !self.apex.zone_of(&query.name) || query.query_class != DNSClass::IN {
            // Not our zone: an authoritative-only server refuses, without AA.
            response.metadata.response_code = ResponseCode::Refused;
            return response;
        }
        response.metadata.authoritative = true;
        let values = self.values.lock().unwrap().clone();
        match values {
            Some(values) if query.name == self.apex => {
                if matches!(query.query_type, RecordType::TXT | RecordType::ANY) {
                    for value in &values {
                        response.add_answer(txt_record(query, value));
                    }
                } else {
                    // NODATA: the name exists, the type does not.
                    response.add_authority(self.soa());
                }
            }
            // Names below the apex, or the apex after `remove_record`.
            _ => {
                response.metadata.response_code = ResponseCode::NXDomain;
                response.add_authority(self.soa());
            }
        }
        response
    }

    fn soa(&self) -> Record {
        let label = |l: &str| self.apex.prepend_label(l).expect("short label fits");
        let soa = SOA::new(
            label("ns"),
            label("hostmaster"),
            self.serial.load(Ordering::Relaxed),
            3600,
            600,
            86400,
            NEGATIVE_TTL,
        );
        Record::from_rdata(self.apex.clone(), NEGATIVE_TTL, RData::SOA(soa))
    }
}

/// One TXT record, its value split into 255-byte character-strings as zone
/// compilers do with long values (RFC 4408 §3.1.3 style).
fn txt_record(query: &Query, value: &[u8]) -> Record {
    let mut strings: Vec<&[u8]> = value.chunks(MAX_CHARACTER_STRING).collect();
    if strings.is_empty() {
        // An empty TXT value is one empty character-string, not no string at all.
        strings.push(b"");
    }
    Record::from_rdata(query.name.clone(), TXT_TTL, RData::TXT(TXT::from_bytes(strings)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(value: &[u8]) -> State {
        State {
            apex: Name::from_ascii("psk.example.").unwrap(),
            values: Mutex::new(Some(vec![value.to_vec()])),
            down: AtomicBool::new(false),
            answered: AtomicU64::new(0),
            serial: AtomicU32::new(1),
        }
    }

    fn query(name: &str, record_type: RecordType, edns: bool) -> Message {
        let mut request = Message::query();
        request.metadata.recursion_desired = true;
        request.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            request.edns = Some(e);
        }
        request
    }

    fn exchange(state: &State, request: &Message, udp: bool) -> Message {
        Message::from_vec(&state.reply(&request.to_vec().unwrap(), udp).unwrap()).unwrap()
    }

    #[test]
    fn answer_header_and_question_are_what_resolvers_expect() {
        let state = state(b"key");
        let request = query("PSK.example.", RecordType::TXT, true);
        let response = exchange(&state, &request, true);
        assert_eq!(response.id, request.id);
        assert_eq!(response.message_type, MessageType::Response);
        assert!(response.authoritative);
        assert!(response.recursion_desired);
        assert!(!response.truncation);
        assert_eq!(response.response_code, ResponseCode::NoError);
        assert_eq!(response.queries, request.queries);
        assert!(response.queries[0].name.eq_case(&request.queries[0].name));
        assert_eq!(response.edns.as_ref().unwrap().max_payload(), EDNS_PAYLOAD);
        assert_eq!(response.answers.len(), 1);
    }

    #[test]
    fn long_values_are_split_into_255_byte_strings() {
        let value: Vec<u8> = (0..600u32).map(|i| b'a' + (i % 26) as u8).collect();
        let response =
            exchange(&state(&value), &query("psk.example.", RecordType::TXT, true), true);
        let RData::TXT(txt) = &response.answers[0].data else {
            panic!("not TXT: {:?}", response.answers[0].record_type());
        };
        let lens: Vec<usize> = txt.txt_data.iter().map(|s| s.len()).collect();
        assert_eq!(lens, [255, 255, 90]);
        assert_eq!(txt.txt_data.concat(), value);
    }

    #[test]
    fn oversized_udp_answer_is_truncated_but_tcp_is_not() {
        let state = state(&[b'k'; 1000]);
        // Without EDNS the UDP limit is 512 bytes.
        let request = query("psk.example.", RecordType::TXT, false);
        let udp = exchange(&state, &request, true);
        assert!(udp.truncation);
        assert!(udp.answers.is_empty());
        let tcp = exchange(&state, &request, false);
        assert!(!tcp.truncation);
        assert_eq!(tcp.answers.len(), 1);
    }

    #[test]
    fn negative_answers_carry_soa() {
        let state = state(b"key");
        let nodata = exchange(&state, &query("psk.example.", RecordType::A, true), true);
        assert_eq!(nodata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);

        *state.values.lock().unwrap() = None;
        let nx = exchange(&state, &query("psk.example.", RecordType::TXT, true), true);
        assert_eq!(nx.response_code, ResponseCode::NXDomain);
        assert!(nx.authoritative);
        assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);

        let foreign = exchange(&state, &query("example.org.", RecordType::TXT, true), true);
        assert_eq!(foreign.response_code, ResponseCode::Refused);
        assert!(!foreign.authoritative);
    }

    #[test]
    fn outage_is_silent_and_not_counted() {
        let state = state(b"key");
        state.down.store(true, Ordering::Relaxed);
        let request = query("psk.example.", RecordType::TXT, true);
        assert!(state.reply(&request.to_vec().unwrap(), true).is_none());
        assert_eq!(state.answered.load(Ordering::Relaxed), 0);
    }
}
