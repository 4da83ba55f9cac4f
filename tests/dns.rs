//! `kapell dns` as a process, asked over real sockets with a DNS client: answers from a received
//! catalog, health followed by its own probes, SRV records, unknown names, what it tells
//! `kapell status`. (Routing through systemd-resolved, containers, forwarding and refusals are
//! proven on booted hosts: tests/discovery_rig.rs.)

use hickory_net::client::{Client, ClientHandle as _};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr as _;
use std::time::{Duration, Instant};

const KAPELL: &str = env!("CARGO_BIN_EXE_kapell");
/// The probe interval of the catalog's checks.
const INTERVAL: Duration = Duration::from_millis(400);
/// How long a change may take to reach the answers: two probe intervals (docs/discovery.md), plus the
/// responder's tick (probes start, and answers are rebuilt, on ticks of 500 ms: two of them)
/// and a second for a loaded machine. The time it took is printed, not judged.
const LEAVE_WITHIN: Duration = Duration::from_millis(2 * 400 + 2 * 500 + 1000);

struct Responder {
    child: Child,
    address: SocketAddr,
    runtime: tempfile::TempDir,
    _received: tempfile::TempDir,
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free UDP+TCP port on 127.0.0.1.
fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Starts `kapell dns` with `catalog` as the received generation's catalog.
fn responder(catalog: &str) -> Responder {
    responder_with(catalog, None)
}

/// [`responder`]; with `docker`, it asks the Docker socket at that path for kapell's networks.
fn responder_with(catalog: &str, docker: Option<&std::path::Path>) -> Responder {
    responder_on(free_port(), catalog, docker)
}

/// [`responder_with`], on `port`.
fn responder_on(port: u16, catalog: &str, docker: Option<&std::path::Path>) -> Responder {
    let responder = start_responder(port, catalog, docker, None);
    let state = responder.runtime.path().join("dns.json");
    wait("the responder's state file", Duration::from_secs(10), || state.exists());
    responder
}

/// Starts `kapell dns` as [`responder_on`] does, without waiting for anything; with `notify`,
/// it tells its readiness on that datagram socket (`NOTIFY_SOCKET`).
fn start_responder(port: u16, catalog: &str, docker: Option<&Path>, notify: Option<&Path>) -> Responder {
    let received = tempfile::tempdir().expect("tempdir");
    let generation = received.path().join("g1-test");
    std::fs::create_dir(&generation).expect("mkdir");
    std::fs::write(generation.join("catalog.json"), catalog).expect("write");
    std::os::unix::fs::symlink("g1-test", received.path().join("current")).expect("link");
    let runtime = tempfile::tempdir().expect("tempdir");
    let empty = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(KAPELL);
    command
        .env("KAPELL_RECEIVED_DIR", received.path())
        .env("KAPELL_RUNTIME_DIR", runtime.path())
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")
        .args(["--config-dir"])
        .arg(empty.path())
        .args(["dns", "--listen", "127.0.0.1", "--port", &port.to_string(), "--no-resolved"]);
    match docker {
        Some(socket) => command.env("DOCKER_HOST", format!("unix://{}", socket.display())),
        None => command.arg("--no-containers"),
    };
    if let Some(socket) = notify {
        command.env("NOTIFY_SOCKET", socket);
    }
    let child = command.stdin(Stdio::null()).spawn().expect("start kapell dns");
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    Responder { child, address, runtime, _received: received }
}

/// The datagram socket a responder says READY=1 on (`NOTIFY_SOCKET`), as systemd's would be.
struct Notify {
    path: std::path::PathBuf,
    socket: std::os::unix::net::UnixDatagram,
    ready: std::cell::Cell<bool>,
}

impl Notify {
    fn bind(dir: &Path) -> Notify {
        let path = dir.join("notify");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the notify socket");
        socket.set_nonblocking(true).expect("nonblocking");
        Notify { path, socket, ready: std::cell::Cell::new(false) }
    }

    /// Whether READY=1 came, without waiting.
    fn ready(&self) -> bool {
        let mut buf = [0u8; 512];
        while let Ok(n) = self.socket.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") {
                self.ready.set(true);
            }
        }
        self.ready.get()
    }
}

fn wait(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < end, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One query: the response code and the answers as text (`10.0.0.1`, `0 0 15432 h1.host.kapell.`).
fn ask(server: SocketAddr, name: &str, kind: RecordType) -> (ResponseCode, Vec<String>) {
    try_ask(server, name, kind).expect("an answer")
}

/// [`ask`], or why there was no answer (nothing listens yet, or no answer in time).
fn try_ask(server: SocketAddr, name: &str, kind: RecordType) -> Result<(ResponseCode, Vec<String>), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
            .with_timeout(Some(Duration::from_secs(2)))
            .build();
        let (mut client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(background);
        let response =
            client.query(Name::from_str(name).expect("name"), DNSClass::IN, kind).await.map_err(|e| e.to_string())?;
        let mut answers: Vec<String> = response
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => a.0.to_string(),
                RData::AAAA(a) => a.0.to_string(),
                RData::SRV(s) => format!("{} {} {} {}", s.priority, s.weight, s.port, s.target),
                other => format!("{other:?}"),
            })
            .collect();
        answers.sort();
        Ok((response.metadata.response_code, answers))
    })
}

fn catalog(port: u16) -> String {
    let interval = INTERVAL.as_millis();
    format!(
        r#"{{
  "version": 1,
  "host": "h1",
  "services": [
    {{ "stack": "data", "service": "db", "container": true,
       "ports": [{{ "host": {port}, "target": 5432, "protocol": "tcp" }}],
       "check": {{ "tcp": {{ "port": 5432 }} }}, "interval_ms": {interval},
       "instances": [
         {{ "host": "h2", "ip": "127.0.0.2", "units": ["data-db.service"] }},
         {{ "host": "h3", "ip": "127.0.0.3", "units": ["data-db.service"] }} ] }},
    {{ "stack": "data", "service": "cache", "container": true, "interval_ms": 10000,
       "instances": [
         {{ "host": "h2", "ip": "127.0.0.2", "units": ["data-cache.service"], "healthy": true }},
         {{ "host": "h3", "ip": "127.0.0.3", "units": ["data-cache.service"], "healthy": false }} ] }},
    {{ "stack": "data", "service": "xn--mnchen-3ya", "container": true, "interval_ms": 10000,
       "instances": [
         {{ "host": "h2", "ip": "127.0.0.2", "units": ["data-xn--mnchen-3ya.service"], "healthy": true }} ] }}
  ]
}}"#
    )
}

#[test]
fn names_follow_the_health_of_each_instance() {
    // db "runs" on 127.0.0.2 and 127.0.0.3: a listener on its published port on each.
    let first = TcpListener::bind("127.0.0.2:0").expect("bind");
    let port = first.local_addr().expect("addr").port();
    let second = TcpListener::bind(("127.0.0.3", port)).expect("bind");
    let dns = responder(&catalog(port));
    let db = "db.data.kapell.";
    wait("both instances of db", 2 * INTERVAL + Duration::from_secs(3), || {
        ask(dns.address, db, RecordType::A).1 == ["127.0.0.2", "127.0.0.3"]
    });
    assert_eq!(
        ask(dns.address, "_db._tcp.data.kapell.", RecordType::SRV),
        (ResponseCode::NoError, vec![format!("0 0 {port} h2.host.kapell."), format!("0 0 {port} h3.host.kapell.")])
    );
    assert_eq!(ask(dns.address, "h3.host.kapell.", RecordType::A).1, ["127.0.0.3"]);

    // One instance stops: gone within two probe intervals, the other stays.
    drop(second);
    let stopped = Instant::now();
    wait("h3's db to leave", LEAVE_WITHIN, || ask(dns.address, db, RecordType::A).1 == ["127.0.0.2"]);
    eprintln!("an instance left the answers {:?} after it stopped", stopped.elapsed());
    // It stays out over several more intervals, and nothing else moved.
    for _ in 0..4 {
        std::thread::sleep(INTERVAL);
        assert_eq!(ask(dns.address, db, RecordType::A).1, ["127.0.0.2"]);
        assert_eq!(ask(dns.address, "cache.data.kapell.", RecordType::A).1, ["127.0.0.2"]);
    }
    // Back when healthy.
    let _second = TcpListener::bind(("127.0.0.3", port)).expect("bind again");
    wait("h3's db to return", LEAVE_WITHIN, || ask(dns.address, db, RecordType::A).1 == ["127.0.0.2", "127.0.0.3"]);
    // Both gone: the name is known, with no address.
    drop(first);
    drop(_second);
    wait("no instance of db", LEAVE_WITHIN, || ask(dns.address, db, RecordType::A) == (ResponseCode::NoError, vec![]));

    // The status file says what each name answers, and where its health comes from. It is
    // written just after the answers change.
    let read_state = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dns.runtime.path().join("dns.json")).expect("state")).expect("json")
    };
    wait("the status file to follow", Duration::from_secs(5), || {
        read_state()["names"]["db.data.kapell"] == serde_json::json!([])
    });
    let state = read_state();
    assert_eq!(
        state["names"]["cache.data.kapell"],
        serde_json::json!([{ "host": "h2", "ip": "127.0.0.2", "source": "controller" }])
    );
    assert_eq!(state["listening"], serde_json::json!(["127.0.0.1"]));
}

/// A Docker that accepts connections and never answers (a hung dockerd) holds up neither the
/// probes nor the answers: an instance that stops still leaves within two probe intervals.
#[test]
fn a_hung_docker_holds_up_no_answer() {
    let first = TcpListener::bind("127.0.0.2:0").expect("bind");
    let port = first.local_addr().expect("addr").port();
    let second = TcpListener::bind(("127.0.0.3", port)).expect("bind");
    let sockets = tempfile::tempdir().expect("tempdir");
    let docker = sockets.path().join("docker.sock");
    // No Docker at first: the responder starts at once.
    let dns = responder_with(&catalog(port), Some(&docker));
    let db = "db.data.kapell.";
    wait("both instances of db", 2 * INTERVAL + Duration::from_secs(3), || {
        ask(dns.address, db, RecordType::A).1 == ["127.0.0.2", "127.0.0.3"]
    });
    // Now a Docker that takes every connection and answers none (each ask waits its timeout).
    let hung = std::os::unix::net::UnixListener::bind(&docker).expect("bind the docker socket");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hung.incoming() {
            held.push(stream);
        }
    });
    // Past the next look at Docker's networks (every 2 s).
    std::thread::sleep(Duration::from_secs(3));
    drop(second);
    let stopped = Instant::now();
    wait("h3's db to leave while Docker hangs", LEAVE_WITHIN, || {
        ask(dns.address, db, RecordType::A).1 == ["127.0.0.2"]
    });
    eprintln!("with a hung Docker, an instance left the answers {:?} after it stopped", stopped.elapsed());
}

/// A Docker that takes connections and answers none, from before the responder starts (a
/// dockerd still starting at boot, behind its socket): the host's own processes are answered
/// from the first query, and never told that a `.kapell` name does not exist. READY=1 waits for
/// Docker's answer (here its timeout, 10 s): containers started after kapell-dns find their
/// gateway listened on.
#[test]
fn a_docker_hung_at_the_start_holds_up_no_answer_to_the_host() {
    let sockets = tempfile::tempdir().expect("tempdir");
    let docker = sockets.path().join("docker.sock");
    let hung = std::os::unix::net::UnixListener::bind(&docker).expect("bind the docker socket");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hung.incoming() {
            held.push(stream);
        }
    });
    let notify = Notify::bind(sockets.path());
    let started = Instant::now();
    let dns = start_responder(free_port(), &catalog(1), Some(&docker), Some(&notify.path));
    let cache = "cache.data.kapell.";
    let mut said = Vec::new();
    // Well within Docker's timeout (10 s), on a loaded machine too: a query sent before the
    // responder listens waits out its own timeout (2 s) before the next.
    wait("an answer with cache's address while Docker hangs", Duration::from_secs(7), || {
        match try_ask(dns.address, cache, RecordType::A) {
            Ok(answer) => {
                let done = answer == (ResponseCode::NoError, vec!["127.0.0.2".to_string()]);
                said.push(answer);
                done
            }
            Err(_) => false, // not listening yet
        }
    });
    eprintln!("answered {:?} after the start, Docker still hung", started.elapsed());
    assert!(said.iter().all(|(code, _)| *code == ResponseCode::NoError), "before the right answer: {said:?}");
    // A name that is not there is still NXDOMAIN, and the one that is stays.
    assert_eq!(ask(dns.address, "nothing.data.kapell.", RecordType::A).0, ResponseCode::NXDomain);
    assert!(!notify.ready(), "READY=1 before Docker answered");
    // Docker's ask times out (10 s); then the responder is ready, and still answers.
    wait("READY=1 once Docker's ask is over", Duration::from_secs(30), || notify.ready());
    eprintln!("READY=1 {:?} after the start", started.elapsed());
    assert!(started.elapsed() >= Duration::from_secs(9), "READY=1 came before Docker's answer could");
    assert_eq!(ask(dns.address, cache, RecordType::A), (ResponseCode::NoError, vec!["127.0.0.2".to_string()]));
}

/// A Docker API on a Unix socket that knows one thing: kapell's stack network `kapell-shop`,
/// subnet 127.0.77.0/24, gateway 127.0.77.1 (a loopback address, so the responder can listen
/// on it). The responder's look at Docker's networks is what this is for; containers on real
/// networks are proven in tests/discovery_rig.rs.
fn docker_with_one_network(socket: &Path) {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind the docker socket");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let body = if request.contains("/networks") {
                r#"[{"Name": "kapell-shop", "Labels": {"io.kapell.network": "stack"},
                    "IPAM": {"Config": [{"Subnet": "127.0.77.0/24", "Gateway": "127.0.77.1"}]}}]"#
            } else {
                r#"{"ApiVersion": "1.44", "Version": "25.0.0"}"#
            };
            let mut stream = &stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

/// A network's gateway the responder cannot listen on at first (its port is taken) is listened
/// on at a later look, and said so in dns.json, where a container's supervisor waits for it,
/// although nothing else changed.
#[test]
fn a_gateway_listened_on_late_is_announced() {
    let sockets = tempfile::tempdir().expect("tempdir");
    let docker = sockets.path().join("docker.sock");
    docker_with_one_network(&docker);
    let port = free_port();
    let taken = std::net::UdpSocket::bind(("127.0.77.1", port)).expect("take the gateway's port");
    let notify = Notify::bind(sockets.path());
    let dns = start_responder(port, &catalog(1), Some(&docker), Some(&notify.path));
    // READY=1 comes once Docker's networks were looked at, and the gateway's port found taken.
    wait("READY=1", Duration::from_secs(10), || notify.ready());
    let state = dns.runtime.path().join("dns.json");
    let listening = || -> Vec<String> {
        let text = std::fs::read_to_string(&state).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        json["listening"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect()
    };
    assert_eq!(listening(), ["127.0.0.1"], "the gateway's port is taken");
    drop(taken);
    // The next looks at Docker's networks (every 2 s) find the port free.
    wait("the gateway in dns.json", Duration::from_secs(6), || listening() == ["127.0.0.1", "127.0.77.1"]);
    let gateway = SocketAddr::from(([127, 0, 77, 1], port));
    assert_eq!(ask(gateway, "cache.data.kapell.", RecordType::A).1, ["127.0.0.2"]);
}

#[test]
fn unknown_names_and_record_types() {
    let dns = responder(&catalog(1));
    // cache: no check, so the controller's word: h3 was seen unhealthy.
    assert_eq!(
        ask(dns.address, "cache.data.kapell.", RecordType::A),
        (ResponseCode::NoError, vec!["127.0.0.2".into()])
    );
    assert_eq!(ask(dns.address, "CACHE.Data.Kapell.", RecordType::A).1, ["127.0.0.2"], "names are case-insensitive");
    assert_eq!(ask(dns.address, "cache.data.kapell.", RecordType::AAAA), (ResponseCode::NoError, vec![]));
    assert_eq!(ask(dns.address, "web.data.kapell.", RecordType::A).0, ResponseCode::NXDomain);
    // A name with names below it exists, with no records of its own (RFC 8020: NXDOMAIN would
    // say that nothing below it exists either).
    for parent in ["kapell.", "data.kapell.", "_tcp.data.kapell.", "host.kapell."] {
        assert_eq!(ask(dns.address, parent, RecordType::A), (ResponseCode::NoError, vec![]), "{parent}");
    }
    assert_eq!(ask(dns.address, "other.kapell.", RecordType::A).0, ResponseCode::NXDomain);
    // A valid punycode label is a name like any other (not looked up in its Unicode form).
    assert_eq!(ask(dns.address, "xn--mnchen-3ya.data.kapell.", RecordType::A).1, ["127.0.0.2"]);
    assert_eq!(ask(dns.address, "cache.data.kapell.", RecordType::TXT), (ResponseCode::NoError, vec![]));
}

/// A catalog that is not kapell's, at the start: the responder serves all the same (containers
/// resolve every name through it) without `.kapell` names, says why naming the file in what
/// `kapell status` reads, and reads the catalog again until it is fixed.
#[test]
fn a_bad_catalog_at_the_start_leaves_out_the_names_until_it_is_fixed() {
    let dns = responder("{\"version\": 7}");
    let state = std::fs::read_to_string(dns.runtime.path().join("dns.json")).expect("dns.json");
    let state: serde_json::Value = serde_json::from_str(&state).expect("json");
    let origin = state["catalog"].as_str().unwrap_or_default();
    let file = Path::new("current").join("catalog.json");
    assert!(origin.starts_with("none: ") && origin.contains(&file.display().to_string()), "{state:#}");
    assert_eq!(ask(dns.address, "cache.data.kapell.", RecordType::A), (ResponseCode::NXDomain, vec![]));
    std::fs::write(dns._received.path().join("g1-test/catalog.json"), catalog(1)).expect("write");
    wait("the fixed catalog's answer", Duration::from_secs(5), || {
        ask(dns.address, "cache.data.kapell.", RecordType::A).1 == ["127.0.0.2"]
    });
    let state = std::fs::read_to_string(dns.runtime.path().join("dns.json")).expect("dns.json");
    let state: serde_json::Value = serde_json::from_str(&state).expect("json");
    assert!(state["catalog"].as_str().is_some_and(|c| c.ends_with("catalog.json")), "{state:#}");
}

/// A push that brings a new catalog (a new generation, `current` swapped to it) is read within
/// a refresh: the responder looks at what the catalog is read from every 2 s and reads it again
/// when that changed.
#[test]
fn a_new_catalog_is_read_once_the_set_changes() {
    let dns = responder(&catalog(1));
    assert_eq!(ask(dns.address, "cache.data.kapell.", RecordType::A).1, ["127.0.0.2"]);
    // The same catalog, h3's cache now seen healthy by the controller.
    let next = catalog(1).replace(
        r#""units": ["data-cache.service"], "healthy": false"#,
        r#""units": ["data-cache.service"], "healthy": true"#,
    );
    let received = dns._received.path();
    std::fs::create_dir(received.join("g2-test")).expect("mkdir");
    std::fs::write(received.join("g2-test/catalog.json"), next).expect("write");
    std::os::unix::fs::symlink("g2-test", received.join("current.new")).expect("link");
    std::fs::rename(received.join("current.new"), received.join("current")).expect("swap");
    wait("the new catalog's answer", Duration::from_secs(5), || {
        ask(dns.address, "cache.data.kapell.", RecordType::A).1 == ["127.0.0.2", "127.0.0.3"]
    });
}

/// One query over UDP as a resolver sends it: with an OPT record of EDNS `version` and `payload`
/// (none when `None`). Returns the answer as it came on the wire.
fn ask_raw(server: SocketAddr, name: &str, edns: Option<(u8, u16)>) -> hickory_proto::op::Message {
    use hickory_proto::op::{Edns, Message, Query};
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_str(name).expect("name"), RecordType::A));
    query.metadata.recursion_desired = true;
    if let Some((version, payload)) = edns {
        let mut opt = Edns::new();
        opt.set_version(version);
        opt.set_max_payload(payload);
        query.set_edns(opt);
    }
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    socket.send_to(&query.to_vec().expect("encode"), server).expect("send");
    let mut buffer = vec![0; 65_535];
    let (n, _) = socket.recv_from(&mut buffer).expect("an answer");
    Message::from_vec(&buffer[..n]).expect("decode")
}

/// EDNS (RFC 6891): a client that says it takes large UDP answers gets them whole, up to 1,232
/// bytes, with an OPT record of the responder's; one that says nothing gets 512 bytes and TC
/// (then asks over TCP); one of a later EDNS version is told BADVERS.
#[test]
fn answers_follow_the_clients_edns() {
    // Hosts h2..h61: h1 is this host, whose instances systemd would speak for.
    let instances: Vec<String> = (2..=61)
        .map(|i| {
            format!(r#"{{ "host": "h{i}", "ip": "10.231.1.{i}", "units": ["web-app.service"], "healthy": true }}"#)
        })
        .collect();
    let catalog = format!(
        r#"{{ "version": 1, "host": "h1", "services": [
             {{ "stack": "web", "service": "app", "container": true, "interval_ms": 10000,
                "instances": [{}] }} ] }}"#,
        instances.join(",")
    );
    let dns = responder(&catalog);
    let large = ask_raw(dns.address, "app.web.kapell.", Some((0, 4096)));
    assert_eq!(large.metadata.response_code, ResponseCode::NoError);
    assert!(!large.metadata.truncation, "a 1 KB answer was cut for a client that takes 4 KB");
    assert_eq!(large.answers.len(), 60);
    let opt = large.edns.as_ref().expect("an OPT record in the answer to an EDNS query");
    assert_eq!((opt.version(), opt.max_payload()), (0, 1232));

    let plain = ask_raw(dns.address, "app.web.kapell.", None);
    assert!(plain.metadata.truncation && plain.answers.len() < 60, "{} answers", plain.answers.len());
    assert!(plain.edns.is_none(), "an OPT record in the answer to a query without one");

    let later = ask_raw(dns.address, "app.web.kapell.", Some((1, 4096)));
    // 16 is BADVERS in an answer with OPT (RFC 6891), BADSIG to a TSIG reader: the same code.
    assert_eq!(u16::from(later.metadata.response_code), u16::from(ResponseCode::BADVERS));
    assert!(later.answers.is_empty());
}

/// A catalog of many instances does not open a socket per instance at once (every probe is due
/// on the first tick): probes wait their turn, so the responder stays within its descriptors
/// and no instance fails for want of one. 300 instances whose check hangs (a server that
/// accepts and never answers): at most 128 connections before the first probe times out.
#[test]
fn probes_of_a_large_catalog_take_turns() {
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = server.local_addr().expect("addr").port();
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let seen = std::sync::Arc::clone(&accepted);
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in server.incoming().flatten() {
            seen.lock().expect("lock").push(Instant::now());
            open.push(stream); // kept open, never answered
        }
    });
    let instances: Vec<String> = (2..=301)
        .map(|i| format!(r#"{{ "host": "h{i}", "ip": "127.0.0.1", "units": ["web-app.service"] }}"#))
        .collect();
    let catalog = format!(
        r#"{{ "version": 1, "host": "h1", "services": [
             {{ "stack": "web", "service": "app", "container": false,
                "check": {{ "http": {{ "port": {port}, "path": "/", "expect": "200-399" }} }},
                "interval_ms": 60000, "timeout_ms": 4000, "instances": [{}] }} ] }}"#,
        instances.join(",")
    );
    let _dns = responder(&catalog);
    wait("the first probes", Duration::from_secs(10), || !accepted.lock().expect("lock").is_empty());
    std::thread::sleep(Duration::from_secs(2));
    let times = accepted.lock().expect("lock").clone();
    let first = times[0];
    let early = times.iter().filter(|t| t.duration_since(first) < Duration::from_secs(3)).count();
    assert!(early <= 128, "{early} probes connected at once");
    assert!(early >= 64, "only {early} probes ran in the first seconds");
}
