//! DNS on the rig: an upstream server on a rig bridge that knows one name outside `.kapell`
//! (`outside.test`), and questions asked from inside a host's network namespace.

use anyhow::{Context, Result};
use hickory_net::client::{Client, ClientHandle as _};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr as _;
use std::time::Duration;

/// What the rig's upstream server answers for `outside.test`.
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

/// How many A records the upstream server answers for `many.test`: more than a UDP answer
/// holds (1,232 bytes), so the whole answer only comes over TCP.
pub const MANY: usize = 100;

/// The hosts' upstream DNS server, over UDP and TCP: `outside.test` A, `many.test` [`MANY`] A
/// records, NXDOMAIN with the SOA of `test.` for anything else.
struct Upstream;

#[async_trait::async_trait]
impl RequestHandler for Upstream {
    async fn handle_request<R: ResponseHandler, T: hickory_net::runtime::Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let name = request.request_info().map(|i| i.query.name().to_string()).unwrap_or_default();
        let kind = request.request_info().map(|i| i.query.query_type()).unwrap_or(RecordType::NULL);
        let mut answers = Vec::new();
        let mut soa = Vec::new();
        if name == "outside.test." {
            if kind == RecordType::A {
                let owner = Name::from_str("outside.test.").expect("name");
                answers.push(Record::from_rdata(owner, 60, RData::A(A(OUTSIDE))));
            }
        } else if name == "many.test." {
            if kind == RecordType::A {
                let owner = Name::from_str("many.test.").expect("name");
                for i in 0..MANY {
                    let address = Ipv4Addr::new(198, 51, 100, u8::try_from(i).expect("< 256"));
                    answers.push(Record::from_rdata(owner.clone(), 60, RData::A(A(address))));
                }
            }
        } else {
            metadata.response_code = ResponseCode::NXDomain;
            let zone = Name::from_str("test.").expect("name");
            let rname = Name::from_str("hostmaster.test.").expect("name");
            let record = SOA::new(zone.clone(), rname, 1, 3600, 600, 86400, 60);
            soa.push(Record::from_rdata(zone, 60, RData::SOA(record)));
        }
        response
            .send_response(builder.build(metadata, answers.iter(), [], soa.iter(), []))
            .await
            .unwrap_or_else(|_| ResponseInfo::from(hickory_proto::op::Header { metadata, counts: Default::default() }))
    }
}

/// [`Upstream`] answering on an address from a thread of its own, until dropped: then its socket
/// closes, so the next network of the same test binary that gets the same subnet can bind it.
pub struct UpstreamServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for UpstreamServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs [`Upstream`] on `address`:53 (UDP and TCP) until the returned server is dropped.
pub fn start_upstream(address: Ipv4Addr) -> Result<UpstreamServer> {
    let socket = std::net::UdpSocket::bind((address, 53)).with_context(|| format!("cannot bind {address}:53"))?;
    socket.set_nonblocking(true)?;
    let listener =
        std::net::TcpListener::bind((address, 53)).with_context(|| format!("cannot bind {address}:53 (TCP)"))?;
    listener.set_nonblocking(true)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let mut server = Server::new(Upstream);
            server.register_socket(tokio::net::UdpSocket::from_std(socket).expect("socket"));
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            server.register_listener(listener, Duration::from_secs(5), 64);
            // The server's tasks run while this waits; leaving drops them and the socket.
            let _ = stopped.await;
        });
    });
    Ok(UpstreamServer { stop: Some(stop), thread: Some(thread) })
}

/// Asks `server` for `name` A from inside the network namespace of `pid` (a thread that joins
/// it), so the query comes from that host's address: the response code and addresses.
pub fn ask_from(pid: u32, server: IpAddr, name: &str) -> Result<(ResponseCode, Vec<String>)> {
    let name = name.to_string();
    std::thread::spawn(move || -> Result<(ResponseCode, Vec<String>)> {
        let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).context("cannot join the host's netns")?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let stream = UdpClientStream::builder(SocketAddr::new(server, 53), TokioRuntimeProvider::default())
                .with_timeout(Some(Duration::from_secs(3)))
                .build();
            let (mut client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
            tokio::spawn(background);
            let response = client.query(Name::from_str(&name)?, DNSClass::IN, RecordType::A).await?;
            let addresses = response.answers.iter().map(|r| format!("{:?}", r.data)).collect();
            Ok((response.metadata.response_code, addresses))
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the query thread panicked"))?
}

/// Asks `server` for `name` A over TCP from inside the network namespace of `pid`: the response
/// code, how many answers and how many authority records came back.
pub fn ask_tcp_from(pid: u32, server: IpAddr, name: &str) -> Result<(ResponseCode, usize, usize)> {
    let name = name.to_string();
    std::thread::spawn(move || -> Result<(ResponseCode, usize, usize)> {
        let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).context("cannot join the host's netns")?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let timeout = Duration::from_secs(5);
            let (connect, sender) =
                TcpClientStream::new(SocketAddr::new(server, 53), None, Some(timeout), TokioRuntimeProvider::default());
            let (mut client, background) =
                Client::<TokioRuntimeProvider>::with_timeout(connect.await?, sender, timeout);
            tokio::spawn(background);
            let response = client.query(Name::from_str(&name)?, DNSClass::IN, RecordType::A).await?;
            Ok((response.metadata.response_code, response.answers.len(), response.authorities.len()))
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the query thread panicked"))?
}

/// `getent hosts NAME` on the host: the first address, or `None` when it does not resolve.
pub fn getent(host: &super::Host, name: &str) -> Result<Option<String>> {
    let out = host.exec(&["getent", "hosts", name])?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()))
}

/// `nslookup NAME` in a container: the addresses it printed after the server's own.
pub fn nslookup(dockerd: &super::Dockerd, container: &str, name: &str) -> Result<Vec<String>> {
    let out = dockerd.docker(&["exec", container, "nslookup", name])?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "Server: 127.0.0.11\nAddress: 127.0.0.11:53\n\nName: db.shop.kapell\nAddress: 10.231.3.2\n"
    Ok(text
        .split("\n\n")
        .skip(1)
        .flat_map(|block| block.lines().filter_map(|l| l.strip_prefix("Address:")).map(|a| a.trim().to_string()))
        .collect())
}
