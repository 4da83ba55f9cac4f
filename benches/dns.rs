//! Discovery benchmark: `kapell dns` answering from its cache, and the catalog of 1,000 services.
//!
//!     cargo bench --bench dns
//!
//! 1. The release binary serves a catalog of 1,000 services on 8 hosts (health as the controller
//!    saw it: no probes, so the table does not move) on 127.0.0.1 and a free port. One client
//!    asks A questions one after another: the round-trip time of an answer from the cache
//!    (percentiles over 20,000 queries, UDP over loopback, client included).
//! 2. Many clients at once (64 queries in flight): queries per second, and the responder's own
//!    CPU time over the run (from /proc/<pid>/stat), so queries per CPU-second is what one core
//!    of the responder answers (it runs on one thread).
//! 3. The catalog for 1,000 services placed on 8 hosts: its JSON size, the controller's cost to
//!    build and encode it, the peer's cost to read it back and build its table.
//!
//! Not a test: nothing asserts. On a busy 2-core machine the client competes with the responder
//! for the cores; the CPU-second figure is the one that does not depend on that.

use hickory_net::client::{Client, ClientHandle as _};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_proto::rr::{DNSClass, Name, RecordType};
use kapell::discovery::catalog::{self, Catalog, Placement};
use kapell::discovery::health::HealthMap;
use kapell::discovery::table::Table;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::str::FromStr as _;
use std::time::{Duration, Instant};

const SERVICES: usize = 1000;
const HOSTS: usize = 8;
const SEQUENTIAL: usize = 20_000;
const IN_FLIGHT: usize = 64;
const CONCURRENT: usize = 100_000;

/// 100 stacks of 10 services, each placed on 2 of the 8 hosts.
fn stacks() -> Vec<(usize, kapell::model::Stack)> {
    (0..SERVICES / 10)
        .map(|s| {
            let mut text = String::new();
            for j in 0..10 {
                text.push_str(&format!(
                    "[services.svc{j}]\nimage = \"registry.example.com/app:1.0\"\nports = [\"{}:8080\"]\n\n",
                    20000 + j
                ));
            }
            let path = std::path::PathBuf::from(format!("/etc/kapell/stack{s}.toml"));
            let parsed = kapell::config::parse_stack(&path, &text);
            (s, parsed.stack.expect("a valid stack"))
        })
        .collect()
}

fn catalog_of(stacks: &[(usize, kapell::model::Stack)]) -> Catalog {
    let ips: Vec<IpAddr> = (0..HOSTS).map(|h| IpAddr::from([10, 0, 0, 10 + h as u8])).collect();
    let names: Vec<String> = (0..HOSTS).map(|h| format!("h{h}")).collect();
    let mut per_host: Vec<Vec<kapell::model::Stack>> = vec![Vec::new(); HOSTS];
    for (s, stack) in stacks {
        per_host[s % HOSTS].push(stack.clone());
        per_host[(s + 1) % HOSTS].push(stack.clone());
    }
    let placements: Vec<Placement<'_>> =
        (0..HOSTS).map(|h| Placement { host: &names[h], ip: ips[h], stacks: &per_host[h] }).collect();
    catalog::build("bench", &placements)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0)
}

fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().map_or(100, |t| t as u64)
}

struct Responder(Child);

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    // 3. The catalog.
    let stacks = stacks();
    let started = Instant::now();
    let catalog = catalog_of(&stacks);
    let json = catalog.to_json();
    let build = started.elapsed();
    let started = Instant::now();
    let read = Catalog::parse(&json).expect("parse");
    let table = Table::build(&read, &HealthMap::initial(&read));
    let load = started.elapsed();
    println!("catalog of {SERVICES} services on {HOSTS} hosts (2 hosts each)");
    println!("  JSON size                          {:>10} bytes", json.len());
    println!("  controller: build + encode         {:>10.2?}", build);
    println!("  peer: parse + answer table         {:>10.2?}  ({} names)", load, table.len());

    // 1. and 2. The responder.
    let dir = tempfile::tempdir().expect("tempdir");
    let generation = dir.path().join("received/g1-bench");
    std::fs::create_dir_all(&generation).expect("mkdir");
    std::fs::write(generation.join("catalog.json"), &json).expect("write");
    std::os::unix::fs::symlink("g1-bench", dir.path().join("received/current")).expect("link");
    let port = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let child = Command::new(env!("CARGO_BIN_EXE_kapell"))
        .env("KAPELL_RECEIVED_DIR", dir.path().join("received"))
        .env("KAPELL_RUNTIME_DIR", dir.path())
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")
        .args(["--config-dir"])
        .arg(dir.path())
        .args(["dns", "--listen", "127.0.0.1", "--port", &port.to_string(), "--no-resolved", "--no-containers"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kapell dns");
    let responder = Responder(child);
    let pid = responder.0.id();
    let state = dir.path().join("dns.json");
    let end = Instant::now() + Duration::from_secs(20);
    while !state.exists() {
        assert!(Instant::now() < end, "kapell dns did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let names: Vec<Name> = (0..SERVICES)
        .map(|i| Name::from_str(&format!("svc{}.stack{}.kapell.", i % 10, i / 10)).expect("name"))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
    runtime.block_on(async {
        let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default()).build();
        let (mut client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(background);
        for name in names.iter().take(200) {
            client.query(name.clone(), DNSClass::IN, RecordType::A).await.expect("warm-up");
        }
        let mut times = Vec::with_capacity(SEQUENTIAL);
        for i in 0..SEQUENTIAL {
            let started = Instant::now();
            let answer = client.query(names[i % SERVICES].clone(), DNSClass::IN, RecordType::A).await.expect("answer");
            times.push(started.elapsed());
            assert_eq!(answer.answers.len(), 2, "two hosts per service");
        }
        times.sort();
        let pct = |p: f64| times[((times.len() as f64 - 1.0) * p) as usize];
        println!("answer round trip from the cache ({SEQUENTIAL} sequential A queries, UDP over loopback)");
        println!("  p50 {:>10.1?}   p90 {:>10.1?}   p99 {:>10.1?}", pct(0.5), pct(0.9), pct(0.99));

        let ticks_before = cpu_ticks(pid);
        let started = Instant::now();
        let per_task = CONCURRENT / IN_FLIGHT;
        let tasks: Vec<_> = (0..IN_FLIGHT)
            .map(|t| {
                let client = client.clone();
                let names = names.clone();
                tokio::spawn(async move {
                    let mut client = client;
                    for i in 0..per_task {
                        let name = names[(t * per_task + i) % SERVICES].clone();
                        client.query(name, DNSClass::IN, RecordType::A).await.expect("answer");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        let wall = started.elapsed();
        let cpu = (cpu_ticks(pid) - ticks_before) as f64 / ticks_per_second() as f64;
        let total = per_task * IN_FLIGHT;
        println!("throughput ({total} A queries, {IN_FLIGHT} in flight)");
        println!("  {:>10.0} queries/s wall     responder CPU {cpu:.2} s", total as f64 / wall.as_secs_f64());
        println!("  {:>10.0} queries per CPU-second of the responder (one thread)", total as f64 / cpu.max(0.01));
    });
    drop(responder);
}
