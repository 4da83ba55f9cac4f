//! The DNS side of `kapell dns`: hickory-server owns the wire format and the sockets; this
//! handler decides, for each query, whether the client may ask ([`Access`]), answers `.kapell`
//! names from the [`Table`], and forwards everything else to the host's own servers.

use super::access::Access;
use super::catalog::DOMAIN;
use super::table::Table;
use hickory_net::client::{Client, ClientHandle as _};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Edns, Message, Metadata, ResponseCode};
use hickory_proto::rr::{LowerName, Name, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr as _;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How long a forwarded query may take upstream.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

/// What the handler reads on every query; the daemon replaces each part as things change.
#[derive(Default)]
pub struct Shared {
    pub table: RwLock<Arc<Table>>,
    pub access: RwLock<Arc<Access>>,
    /// The host's servers, in order of preference.
    pub upstreams: RwLock<Arc<Vec<IpAddr>>>,
}

impl Shared {
    pub fn table(&self) -> Arc<Table> {
        self.table.read().map(|t| Arc::clone(&t)).unwrap_or_default()
    }

    fn access(&self) -> Arc<Access> {
        self.access.read().map(|a| Arc::clone(&a)).unwrap_or_default()
    }

    pub fn upstreams(&self) -> Arc<Vec<IpAddr>> {
        self.upstreams.read().map(|u| Arc::clone(&u)).unwrap_or_default()
    }
}

/// One per listening address; all share one [`Shared`].
pub struct Handler {
    pub shared: Arc<Shared>,
    domain: LowerName,
}

impl Handler {
    pub fn new(shared: Arc<Shared>) -> Handler {
        let domain = Name::from_str(&format!("{DOMAIN}."))
            .map(LowerName::from)
            .unwrap_or_else(|_| LowerName::from(Name::root()));
        Handler { shared, domain }
    }
}

/// How a query was dealt with.
enum Verdict {
    Answer {
        code: ResponseCode,
        answers: Vec<Record>,
        /// The authority section: a forwarded answer's (the SOA a resolver caches a negative
        /// answer by, the servers of a referral).
        authorities: Vec<Record>,
        additionals: Vec<Record>,
        authoritative: bool,
    },
    Refuse,
}

impl Verdict {
    /// An answer of ours with no records but its code.
    fn empty(code: ResponseCode, authoritative: bool) -> Verdict {
        Verdict::Answer { code, answers: vec![], authorities: vec![], additionals: vec![], authoritative }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: hickory_net::runtime::Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let verdict = match request.edns.as_ref() {
            Some(theirs) if theirs.version() > EDNS_VERSION => Verdict::empty(ResponseCode::BADVERS, false),
            _ => self.decide(request).await,
        };
        let mut builder = MessageResponseBuilder::from_message_request(request);
        let code = match &verdict {
            Verdict::Refuse => ResponseCode::Refused,
            Verdict::Answer { code, .. } => *code,
        };
        let edns = request.edns.as_ref().map(|theirs| response_edns(theirs, code));
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let sent = match verdict {
            Verdict::Refuse => {
                response.send_response(builder.error_msg(&request.metadata, ResponseCode::Refused)).await
            }
            Verdict::Answer { code, answers, authorities, additionals, authoritative } => {
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = code;
                metadata.authoritative = authoritative;
                metadata.recursion_available = true;
                // Too large for the UDP size the client gave (512 bytes without EDNS):
                // hickory-server cuts it and sets TC, and the client asks again over TCP.
                let message = builder.build(metadata, answers.iter(), authorities.iter(), [], additionals.iter());
                response.send_response(message).await
            }
        };
        sent.unwrap_or_else(|e| {
            log::debug!("kapell dns: cannot send an answer to {}: {e}", request.src());
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_proto::op::Header { metadata, counts: Default::default() })
        })
    }
}

/// The EDNS version this responder speaks (RFC 6891); a query of a later one is answered BADVERS.
const EDNS_VERSION: u8 = 0;

/// The largest UDP answer sent, whatever a client says it takes: the size RFC 9715 and the DNS
/// flag day of 2020 recommend, below which no path fragments.
const MAX_UDP_PAYLOAD: u16 = 1232;

/// The OPT record of an answer to a query that had one (RFC 6891): the UDP size this answer may
/// take (the client's, within 512..=[`MAX_UDP_PAYLOAD`]), and the high bits of a response code
/// past 15 (BADVERS, or a forwarded extended code).
fn response_edns(theirs: &Edns, code: ResponseCode) -> Edns {
    let mut ours = Edns::new();
    ours.set_version(EDNS_VERSION);
    ours.set_max_payload(theirs.max_payload().clamp(512, MAX_UDP_PAYLOAD));
    ours.set_rcode_high(code.high());
    ours
}

impl Handler {
    async fn decide(&self, request: &Request) -> Verdict {
        if !self.shared.access().allows(request.src().ip()) {
            return Verdict::Refuse;
        }
        let Ok(info) = request.request_info() else {
            return Verdict::empty(ResponseCode::FormErr, false);
        };
        let name = info.query.name();
        if self.domain.zone_of(name) {
            // ASCII as it came: `Display` would turn a valid `xn--` label into Unicode, which no
            // name of the table is.
            return self.answer(&name.to_ascii().to_ascii_lowercase(), info.query.query_type());
        }
        self.forward(info.query.original().name().clone(), info.query.query_class(), info.query.query_type()).await
    }

    /// From the table: no I/O, no allocation beyond the copy of the records.
    fn answer(&self, name: &str, kind: hickory_proto::rr::RecordType) -> Verdict {
        let table = self.shared.table();
        let key = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
        match table.get(&key) {
            Some(entry) => {
                let answers = entry.answers(kind).to_vec();
                let additionals =
                    if kind == hickory_proto::rr::RecordType::SRV { entry.additional.clone() } else { vec![] };
                Verdict::Answer {
                    code: ResponseCode::NoError,
                    answers,
                    authorities: vec![],
                    additionals,
                    authoritative: true,
                }
            }
            None => Verdict::empty(ResponseCode::NXDomain, true),
        }
    }

    /// To the host's servers in turn, as the C library would ask them: the first answer wins,
    /// unless it is SERVFAIL or REFUSED (that server cannot answer; the next may); SERVFAIL when
    /// none answers. The answer goes back whole: its code, answers, authority and additional
    /// records.
    async fn forward(
        &self,
        name: Name,
        class: hickory_proto::rr::DNSClass,
        kind: hickory_proto::rr::RecordType,
    ) -> Verdict {
        let mut failed = None;
        for server in self.shared.upstreams().iter() {
            match query(SocketAddr::new(*server, 53), name.clone(), class, kind).await {
                Ok(message)
                    if matches!(message.metadata.response_code, ResponseCode::ServFail | ResponseCode::Refused) =>
                {
                    log::debug!("kapell dns: {server} answered {name} with {}", message.metadata.response_code);
                    failed.get_or_insert(message);
                }
                Ok(message) => return forwarded(message),
                Err(e) => log::debug!("kapell dns: {server} did not answer {name}: {e}"),
            }
        }
        // No server could answer: what the first of them said, else SERVFAIL.
        failed.map_or_else(|| Verdict::empty(ResponseCode::ServFail, false), forwarded)
    }
}

/// An upstream's answer as ours to send: its records (its own OPT aside: ours goes with the
/// answer, see [`response_edns`]).
fn forwarded(message: Message) -> Verdict {
    let not_opt = |r: &Record| r.record_type() != hickory_proto::rr::RecordType::OPT;
    Verdict::Answer {
        code: message.metadata.response_code,
        answers: message.answers,
        authorities: message.authorities,
        additionals: message.additionals.into_iter().filter(not_opt).collect(),
        authoritative: false,
    }
}

/// One query to `server`: over UDP, and again over TCP when the UDP answer came truncated, so
/// a large answer (many addresses, a long TXT) is forwarded whole rather than cut short.
async fn query(
    server: SocketAddr,
    name: Name,
    class: hickory_proto::rr::DNSClass,
    kind: hickory_proto::rr::RecordType,
) -> Result<Message, String> {
    let stream =
        UdpClientStream::builder(server, TokioRuntimeProvider::default()).with_timeout(Some(FORWARD_TIMEOUT)).build();
    let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
    let answer = ask(client, background, name.clone(), class, kind).await?;
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    let (connect, sender) = TcpClientStream::new(server, None, Some(FORWARD_TIMEOUT), TokioRuntimeProvider::default());
    let stream = tokio::time::timeout(FORWARD_TIMEOUT, connect)
        .await
        .map_err(|_| "no TCP connection in time".to_string())?
        .map_err(|e| e.to_string())?;
    let (client, background) = Client::<TokioRuntimeProvider>::with_timeout(stream, sender, FORWARD_TIMEOUT);
    ask(client, background, name, class, kind).await
}

/// `client`'s one query, its background task running meanwhile.
async fn ask<B>(
    mut client: Client<TokioRuntimeProvider>,
    background: B,
    name: Name,
    class: hickory_proto::rr::DNSClass,
    kind: hickory_proto::rr::RecordType,
) -> Result<Message, String>
where
    B: std::future::Future + Send + 'static,
    B::Output: Send,
{
    let task = tokio::spawn(background);
    let result = client.query(name, class, kind).await.map(|r| r.into_message()).map_err(|e| e.to_string());
    task.abort();
    result
}
