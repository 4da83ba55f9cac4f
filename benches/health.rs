//! Health probe benchmark (docs/benchmarks.md: < 1 ms CPU per HTTP or TCP probe; 1,000 probed services on
//! one host < 5 % of one core at a 10 s interval).
//!
//!     cargo bench --bench health
//!
//! 1. Per probe: probes run on this thread in a current-thread tokio runtime, as in the prober and
//!    the supervisor, against servers on loopback served by another thread; the CPU time of the
//!    probing thread alone (`getrusage(RUSAGE_THREAD)`) divided by the number of probes.
//! 2. A host: the release `kapell prober` as a child process, given 1,000 native services (half
//!    `http`, half `tcp`, 10 s interval) the way a host gives them: a unit file per service with
//!    its `[X-Kapell-Health]` section (in a directory named by `KAPELL_UNIT_PATH`) and a healthy
//!    state file per service (under `KAPELL_RUNTIME_DIR`). Each service is a listener on loopback
//!    served by this process. After a warm-up of one interval, the prober's CPU time (utime +
//!    stime from /proc) over three intervals, as a share of one core, and the probes the servers
//!    answered. All probes pass, so the prober never needs systemd (it connects to the bus only to
//!    check a unit after a failure).
//!
//! Not a test: nothing asserts. Traffic stays on 127.0.0.1.

use kapell::health::probe::{Target, probe};
use kapell::health::state::{self, Owner, State};
use kapell::model::{Check, Health, OnUnhealthy, StatusRange};
use kapell::quantity::Duration as Interval;
use kapell::render::health::HealthSpec;
use kapell::unitfile::UnitText;
use nix::sys::resource::{UsageWho, getrusage};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PROBES: u32 = 5_000;
const SERVICES: usize = 1_000;
const INTERVAL: Duration = Duration::from_secs(10);

fn main() {
    println!("health probes (CPU of the prober only; servers run elsewhere)\n");
    println!("| what | probes | CPU per probe | wall per probe |");
    println!("| --- | --- | --- | --- |");
    let served = Arc::new(AtomicU64::new(0));
    let http = serve(1, served.clone())[0];
    let tcp = serve(1, served.clone())[0];
    per_probe("HTTP GET (hyper)", &Check::Http { port: http, path: "/healthz".into(), expect: StatusRange::DEFAULT });
    per_probe("TCP connect", &Check::Tcp { port: tcp });

    println!("\nkapell prober, {SERVICES} services, {}s interval\n", INTERVAL.as_secs());
    host(served);
}

fn per_probe(what: &str, check: &Check) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let target = Target { check, address: None, timeout: Duration::from_secs(2), user: None };
    runtime.block_on(async {
        for _ in 0..100 {
            assert!(probe(&target).await.passed, "warm-up probe failed");
        }
    });
    let cpu0 = thread_cpu();
    let wall0 = Instant::now();
    let passed = runtime.block_on(async {
        let mut passed = 0;
        for _ in 0..PROBES {
            passed += u32::from(probe(&target).await.passed);
        }
        passed
    });
    let cpu = thread_cpu() - cpu0;
    let wall = wall0.elapsed();
    assert_eq!(passed, PROBES, "every probe should pass");
    println!(
        "| {what} | {PROBES} | {:.1} µs | {:.1} µs |",
        cpu.as_secs_f64() * 1e6 / f64::from(PROBES),
        wall.as_secs_f64() * 1e6 / f64::from(PROBES)
    );
}

fn host(served: Arc<AtomicU64>) {
    let ports = serve(SERVICES, served.clone());
    let work = tempfile::tempdir().expect("tmp");
    let units = work.path().join("units");
    let runtime = work.path().join("run");
    std::fs::create_dir_all(&units).expect("units dir");
    let health_dir = runtime.join("health");
    for (i, port) in ports.iter().enumerate() {
        let check = if i % 2 == 0 {
            Check::Http { port: *port, path: "/healthz".into(), expect: StatusRange::DEFAULT }
        } else {
            Check::Tcp { port: *port }
        };
        let spec = HealthSpec {
            health: Health {
                check,
                interval: Some(Interval(u64::try_from(INTERVAL.as_micros()).expect("µs"))),
                timeout: None,
                retries: None,
                start_period: None,
            },
            on_unhealthy: OnUnhealthy::Restart,
            user: None,
        };
        let mut unit = UnitText::default();
        unit.section("Unit").line(kapell::unitset::markers::STACK_KEY, "bench");
        spec.write(&mut unit.section(kapell::unitset::markers::HEALTH_SECTION));
        let name = format!("bench-s{i}.service");
        std::fs::write(units.join(&name), unit.finish()).expect("unit");
        let state = State {
            unit: name,
            service: format!("bench.s{i}"),
            instance: None,
            owner: Owner::Host,
            invocation: format!("bench{i}"),
            health: "healthy".into(),
            check: String::new(),
            started_usec: 0,
            failures: 0,
            last_probe: None,
        };
        state::write(&health_dir, &state).expect("state file");
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kapell"))
        .arg("prober")
        .env("KAPELL_RUNTIME_DIR", &runtime)
        .env("KAPELL_UNIT_PATH", &units)
        .env_remove("NOTIFY_SOCKET")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kapell prober");
    let pid = child.id();
    std::thread::sleep(INTERVAL + Duration::from_secs(2));
    let (cpu0, served0, wall0) = (process_cpu(pid), served.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(INTERVAL * 3);
    let (cpu, probes, wall) = (process_cpu(pid) - cpu0, served.load(Ordering::Relaxed) - served0, wall0.elapsed());
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.trim_start_matches("VmRSS:").trim().to_string())
        })
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let healthy = (0..SERVICES)
        .filter(|i| {
            state::read(&health_dir, &format!("bench-s{i}.service"))
                .is_some_and(|s| s.last_probe.is_some_and(|p| p.passed))
        })
        .count();
    println!("| services | window | probes answered | prober CPU | share of one core | per probe | RSS |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {SERVICES} ({} http, {} tcp) | {:.0} s | {probes} | {:.2} s | {:.2} % | {:.1} µs | {rss} |",
        SERVICES.div_ceil(2),
        SERVICES / 2,
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        if probes == 0 { 0.0 } else { cpu.as_secs_f64() * 1e6 / probes as f64 },
    );
    println!("\n{healthy} of {SERVICES} state files show a passing last probe");
}

/// `n` listeners on loopback answering every connection with `HTTP/1.1 200` (a TCP probe just
/// connects and closes), served by one thread of their own; their ports.
fn serve(n: usize, served: Arc<AtomicU64>) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback")).collect();
    let ports = listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            for listener in listeners {
                listener.set_nonblocking(true).expect("nonblocking");
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let served = served.clone();
                tokio::spawn(async move {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else { continue };
                        served.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(answer(stream));
                    }
                });
            }
            std::future::pending::<()>().await;
        });
    });
    ports
}

async fn answer(stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = stream;
    let mut buf = [0u8; 1024];
    if let Ok(n) = stream.read(&mut buf).await
        && n > 0
    {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
    }
}

fn thread_cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
    t(u.user_time()) + t(u.system_time())
}

/// utime + stime of a process, from /proc/PID/stat (clock ticks of 10 ms).
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}
