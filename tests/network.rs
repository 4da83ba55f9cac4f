//! Containers that find each other (a network per stack), in one booted systemd
//! host (nspawn) with kapell and a real, private dockerd whose userland proxy binds published
//! ports on the machine. Images are built locally: busybox, and busybox plus Debian's sqlite3 and
//! socat (no registry).
//!
//! The host and the engine are booted once for the file; the independent scenarios run in
//! parallel threads against them, each on its own stacks:
//! - the seed scenario from examples/sqlite-docker.toml: starting only the proxy brings the server
//!   up first, and a query through the proxy's published port is answered by SQLite, which the
//!   proxy reached as `server:12345`;
//! - examples/webapp.toml: `web` reaches `db` by name, also after systemd restarted `db` into a
//!   container with a new address; `kapell status --json` shows the addresses; then a container of
//!   an unrelated stack can neither resolve `db` nor join webapp's network, and one of a stack that requires
//!   `webapp.db` can, as `db.webapp`;
//! - `replicas = 3`: the service name resolves to all three and repeated requests reach each one;
//!   `<service>-<n>` reaches instance n;
//! - two supervisors of one stack started at the same instant, five times over with the network
//!   removed in between, both succeed and leave one network.
//!
//! (busybox 1.35's `wget -T` crashes in Debian's static build: timeouts are `timeout N wget …`.)
//!
//! Needs root and the packages of .ci/deps; nothing is mocked or skipped, and everything (host,
//! engine, containers, networks, bridges) is removed on the way out, also on failure.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use support::{Dockerd, Host, eventually};

const KAPELL: &str = env!("CARGO_BIN_EXE_kapell");
const BUSYBOX: &str = "kapell-demo/busybox:1";
const SQLITE: &str = "kapell-demo/sqlite-socat:1";

/// The engine and the host. Fields drop in order: the host before the engine it uses.
struct Rig {
    host: Host,
    dockerd: Dockerd,
}

impl Rig {
    fn systemctl(&self, args: &[&str]) -> Result<String> {
        self.host.systemctl_ok(args)
    }

    fn prop(&self, unit: &str, prop: &str) -> Result<String> {
        Ok(self.host.systemctl_ok(&["show", "-p", prop, "--value", unit])?.trim().to_string())
    }

    fn mono(&self, unit: &str, prop: &str) -> Result<u64> {
        let value = self.prop(unit, prop)?;
        value.parse().with_context(|| format!("{unit} {prop}={value:?}"))
    }

    fn docker(&self, args: &[&str]) -> Result<String> {
        Ok(self.dockerd.docker_ok(args)?.trim().to_string())
    }

    fn inspect(&self, name: &str, format: &str) -> Result<String> {
        self.docker(&["inspect", "-f", format, name])
    }

    /// The container's address on `network`.
    fn address(&self, container: &str, network: &str) -> Result<String> {
        self.inspect(container, &format!(r#"{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}"#))
    }

    /// `sh -c SCRIPT` in a container: its exit status and output.
    fn sh(&self, container: &str, script: &str) -> Result<(bool, String)> {
        let out = self.dockerd.docker(&["exec", container, "sh", "-c", script])?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), text))
    }

    fn sh_ok(&self, container: &str, script: &str) -> Result<String> {
        let (ok, text) = self.sh(container, script)?;
        ensure!(ok, "`{script}` failed in {container}:\n{text}");
        Ok(text)
    }

    fn wait_active(&self, unit: &str, timeout: Duration) -> Result<()> {
        eventually(&format!("{unit} active"), timeout, || {
            let state = self.prop(unit, "ActiveState")?;
            ensure!(state != "failed", "{unit} failed:\n{}", self.host.journal(unit)?);
            Ok(state == "active")
        })
    }
}

/// Whether `address` lies inside `subnet` ("10.232.7.32/27").
fn in_subnet(address: &str, subnet: &str) -> Result<bool> {
    let (network, bits) = subnet.split_once('/').with_context(|| format!("not a subnet: {subnet:?}"))?;
    let bits: u32 = bits.parse().with_context(|| format!("not a subnet: {subnet:?}"))?;
    ensure!(bits <= 32, "not a subnet: {subnet:?}");
    let network: std::net::Ipv4Addr = network.parse().with_context(|| format!("not a subnet: {subnet:?}"))?;
    let address: std::net::Ipv4Addr = address.parse().with_context(|| format!("not an address: {address:?}"))?;
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    Ok(u32::from(address) & mask == u32::from(network) & mask)
}

/// Sends `request` to 127.0.0.1:`port` on the machine, half-closes, and returns the whole answer.
fn tcp(port: u16, request: &str) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("cannot connect to :{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes()).with_context(|| format!("cannot send to :{port}"))?;
    // A server that answered and closed already makes this fail; its answer is still there.
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = String::new();
    stream.read_to_string(&mut answer).with_context(|| format!("no answer on :{port}"))?;
    Ok(answer)
}

/// An example stack that does not start at boot (the test starts what it needs), with its
/// published port moved to `port` (free on this machine) and a grace period of one second (its
/// containers' main processes ignore SIGTERM, and the host's shutdown stops them in dependency
/// order, one after the other).
fn example(name: &str, published: &str, port: u16) -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let from = format!("\"127.0.0.1:{published}:");
    ensure!(text.contains(&from), "{name} no longer publishes {published}");
    Ok(text
        .replacen("description = ", "enable = false\ndescription = ", 1)
        .replace(&from, &format!("\"127.0.0.1:{port}:"))
        .replace("stop_timeout = \"5s\"", "stop_timeout = \"1s\"")
        .replace("stop_timeout = \"2s\"", "stop_timeout = \"1s\""))
}

const REPLICAS: &str = r#"
enable = false

[services.api]
image = "kapell-demo/busybox:1"
command = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
replicas = 3
stop_timeout = "1s"

[services.probe]
image = "kapell-demo/busybox:1"
command = ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
"#;

/// An unrelated stack: it depends on nothing of webapp's.
const OTHER: &str = r#"
enable = false

[services.lonely]
image = "kapell-demo/busybox:1"
command = ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
"#;

/// A stack that requires a service of webapp.
const CLIENT: &str = r#"
enable = false

[services.reporter]
image = "kapell-demo/busybox:1"
command = ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
requires = ["webapp.db"]
"#;

/// A long-lived container that only wants webapp's db: systemd does not restart it with db.
const WATCH: &str = r#"
enable = false

[services.watcher]
image = "kapell-demo/busybox:1"
command = ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
wants = ["webapp.db"]
"#;

/// Two services that start together and find their network missing.
const RACE: &str = r#"
enable = false

[services.left]
image = "kapell-demo/busybox:1"
command = ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]

[services.right]
image = "kapell-demo/busybox:1"
command = ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
"#;

/// One scenario, run in its own thread against the shared rig.
type Check<'a> = dyn Fn(&Rig) -> Result<()> + Sync + 'a;

#[test]
fn containers_find_each_other_by_name_within_their_stacks() -> Result<()> {
    let started = Instant::now();
    let dockerd = Dockerd::start_publishing_ports()?;
    dockerd.import_busybox(BUSYBOX)?;
    dockerd.import_busybox_with(SQLITE, &["/usr/bin/sqlite3", "/usr/bin/socat"])?;
    let (seed_port, web_port) = (support::free_port()?, support::free_port()?);
    ensure!(seed_port != web_port, "the kernel picked the same port twice");
    let stacks = [
        ("sqlite-docker", example("sqlite-docker.toml", "12346", seed_port)?),
        ("webapp", example("webapp.toml", "8080", web_port)?),
        ("rep", REPLICAS.to_string()),
        ("other", OTHER.to_string()),
        ("client", CLIENT.to_string()),
        ("race", RACE.to_string()),
        ("watch", WATCH.to_string()),
    ];
    let mut builder = Host::builder().kapell(KAPELL).docker(&dockerd);
    for (name, text) in &stacks {
        builder = builder.install_file(format!("/etc/kapell/{name}.toml"), text.as_str(), 0o644);
    }
    let host = builder.boot()?;
    let rig = Rig { host, dockerd };
    eprintln!("timing: engine, images and host ready in {:.1?}", started.elapsed());

    let checks: [(&str, &Check<'_>); 4] = [
        ("seed scenario", &|rig| seed(rig, seed_port)),
        ("webapp, isolation, cross-stack", &|rig| {
            webapp(rig, web_port)?;
            isolation_and_cross_stack(rig)
        }),
        ("replicas", &replicas),
        ("simultaneous supervisors", &simultaneous_start),
    ];
    let failures: Vec<String> = std::thread::scope(|s| {
        let running: Vec<_> = checks
            .iter()
            .map(|(name, check)| {
                let rig = &rig;
                (
                    *name,
                    s.spawn(move || {
                        let begun = Instant::now();
                        let result = check(rig);
                        eprintln!("timing: {name}: {:.1?}", begun.elapsed());
                        result
                    }),
                )
            })
            .collect();
        running
            .into_iter()
            .filter_map(|(name, handle)| match handle.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{name}: {e:#}")),
                Err(_) => Some(format!("{name}: panicked")),
            })
            .collect()
    });
    eprintln!("timing: whole file {:.1?}", started.elapsed());
    if !failures.is_empty() {
        bail!("{}", failures.join("\n\n"));
    }
    Ok(())
}

/// Starting only the proxy brings the server up first; a query sent to the proxy's published
/// port is answered by SQLite, which the proxy found as `server`.
fn seed(rig: &Rig, port: u16) -> Result<()> {
    let (server, proxy) = ("sqlite-docker-server.service", "sqlite-docker-proxy.service");
    ensure!(rig.prop(server, "ActiveState")? == "inactive", "the server runs before anything was started");
    rig.systemctl(&["start", proxy])?;
    for unit in [server, proxy] {
        ensure!(rig.prop(unit, "ActiveState")? == "active", "{unit} is not active\n{}", rig.host.journal(unit)?);
    }
    let server_ready = rig.mono(server, "ActiveEnterTimestampMonotonic")?;
    let proxy_started = rig.mono(proxy, "ExecMainStartTimestampMonotonic")?;
    ensure!(proxy_started >= server_ready, "proxy started at {proxy_started} µs, server ready at {server_ready} µs");

    let query = "insert or replace into kv values ('greeting', 'hello from sqlite'); \
                 select v from kv where k = 'greeting';\n";
    // The proxy has no health check: its unit is active once its container runs, which can be
    // before socat listens. The query is idempotent, so it is asked until answered.
    let mut answer = Ok(String::new());
    let answered = eventually("an answer through the proxy", Duration::from_secs(10), || {
        answer = tcp(port, query);
        Ok(answer.as_ref().is_ok_and(|a| a.trim() == "hello from sqlite"))
    });
    answered.with_context(|| format!("unexpected answer through the proxy: {answer:?}"))?;

    // The proxy found the server by name on the stack's network.
    let aliases = rig.inspect(
        "kapell-sqlite-docker-server",
        r#"{{json (index .NetworkSettings.Networks "kapell-sqlite-docker").Aliases}}"#,
    )?;
    // (Docker adds the container's short id to the list.)
    ensure!(aliases.starts_with(r#"["server","server.sqlite-docker""#), "server's aliases: {aliases}");
    let command = rig.inspect("kapell-sqlite-docker-proxy", "{{json .Config.Cmd}}")?;
    ensure!(command.contains("TCP:server:12345"), "the proxy does not use the name: {command}");
    let labels = rig.docker(&["network", "inspect", "-f", "{{json .Labels}}", "kapell-sqlite-docker"])?;
    ensure!(labels == r#"{"io.kapell.network":"stack","io.kapell.stack":"sqlite-docker"}"#, "labels {labels}");
    Ok(())
}

/// `web` serves db's data fetched by name; after systemd restarts `db` (its container killed),
/// db has a new container with a new address and web still reaches it. systemd restarts web with
/// db (`requires` is `Requires=`, which propagates restarts), so a container of another stack
/// that only `wants` db shows that a container that keeps running follows db by name too.
fn webapp(rig: &Rig, port: u16) -> Result<()> {
    let (db, web) = ("webapp-db.service", "webapp-web.service");
    rig.systemctl(&["start", "webapp.target"])?;
    rig.wait_active(web, Duration::from_secs(30))?;
    let page = |expected_starts: usize| -> Result<()> {
        // From the machine through web's published port, and web asks db by name.
        let answer = tcp(port, "GET /cgi-bin/db HTTP/1.0\r\nHost: web\r\n\r\n")?;
        let starts = answer.lines().filter(|l| l.starts_with("started ")).count();
        ensure!(starts == expected_starts, "expected {expected_starts} db start(s) in web's page:\n{answer}");
        Ok(())
    };
    // web has no health check: its unit is active once its container runs, which can be before
    // httpd listens (docker's proxy then resets the connection), so its first page is waited for
    // as the one after db's restart is.
    eventually("web's page", Duration::from_secs(10), || Ok(page(1).is_ok())).or_else(|e| page(1).context(e))?;
    rig.systemctl(&["start", "watch-watcher.service"])?;
    let watcher_id = rig.inspect("kapell-watch-watcher", "{{.Id}}")?;
    let from_watcher = || rig.sh_ok("kapell-watch-watcher", "timeout 5 wget -q -O- http://db.webapp:5432/journal");
    ensure!(from_watcher()?.lines().filter(|l| l.starts_with("started ")).count() == 1, "watcher cannot reach db");

    let (db_ip, db_id) =
        (rig.address("kapell-webapp-db", "kapell-webapp")?, rig.inspect("kapell-webapp-db", "{{.Id}}")?);
    let web_id = rig.inspect("kapell-webapp-web", "{{.Id}}")?;
    rig.docker(&["kill", "kapell-webapp-db"])?;
    // Docker hands a released address to the next container that asks, which on a busy host is
    // rarely the one that let it go. Here nothing else asks, so a squatter takes db's old address
    // while systemd waits `restart_delay` (1 s), and the new db must get another one.
    eventually("db's old container removed", Duration::from_secs(10), || {
        Ok(rig.dockerd.docker(&["inspect", &db_id])?.status.code() == Some(1))
    })?;
    let squatter = rig.docker(&["run", "-d", "--network", "kapell-webapp", BUSYBOX, "sleep", "100000"])?;
    let squatted = rig.address(&squatter, "kapell-webapp");
    eventually("systemd to restart db", Duration::from_secs(30), || {
        Ok(rig.prop(db, "NRestarts")?.parse::<u32>()? >= 1 && rig.prop(db, "ActiveState")? == "active")
    })?;
    rig.docker(&["rm", "-f", &squatter])?;
    ensure!(squatted? == db_ip, "the squatter did not get db's old address {db_ip}");
    let (new_ip, new_id) =
        (rig.address("kapell-webapp-db", "kapell-webapp")?, rig.inspect("kapell-webapp-db", "{{.Id}}")?);
    ensure!(new_id != db_id, "db's container was not replaced");
    ensure!(new_ip != db_ip, "db came back with the same address {db_ip}");
    // systemd restarts web along with db; once it is back, its page shows both of db's starts.
    rig.wait_active(web, Duration::from_secs(30))?;
    eventually("web's page after db's restart", Duration::from_secs(10), || Ok(page(2).is_ok()))
        .or_else(|e| page(2).context(e))?;
    let web_replaced = rig.inspect("kapell-webapp-web", "{{.Id}}")? != web_id;
    ensure!(rig.inspect("kapell-watch-watcher", "{{.Id}}")? == watcher_id, "the watcher was restarted");
    let seen = from_watcher()?;
    ensure!(seen.lines().filter(|l| l.starts_with("started ")).count() == 2, "watcher after db's restart: {seen}");
    eprintln!(
        "addresses: db {db_ip} before its restart, {new_ip} after; web (restarted with db: {web_replaced}) and \
         the running watcher reached both by name"
    );

    // `kapell status --json` shows each container's address.
    let status: serde_json::Value =
        serde_json::from_str(&rig.host.exec_ok(&["kapell", "status", "--json", "webapp"])?)?;
    let rows = status.as_array().context("status --json is not an array")?;
    for (service, container) in [("db", "kapell-webapp-db"), ("web", "kapell-webapp-web")] {
        let row = rows.iter().find(|r| r["service"] == service).with_context(|| format!("no row for {service}"))?;
        let shown = &row["addresses"]["kapell-webapp"];
        let actual = rig.address(container, "kapell-webapp")?;
        ensure!(*shown == serde_json::json!(actual), "status shows {shown} for {service}, Docker says {actual}");
    }
    Ok(())
}

/// With webapp running: a container of an unrelated stack can neither resolve `db` nor has an
/// interface on webapp's network (whether packets cross networks is the kernel's call); one
/// whose stack requires `webapp.db` joins webapp's network and reaches it as `db.webapp`.
fn isolation_and_cross_stack(rig: &Rig) -> Result<()> {
    rig.systemctl(&["start", "other-lonely.service", "client-reporter.service"])?;
    let db_ip = rig.address("kapell-webapp-db", "kapell-webapp")?;
    // Docker's DNS answers the names it knows at once and forwards the others upstream, where
    // the rig has nothing answering: a one-second lookup settles both, as the control shows.
    let lookup = |name: &str| format!("nslookup -type=a -timeout=1 -retry=1 {name}");
    rig.sh_ok("kapell-other-lonely", &lookup("lonely")).context("the control lookup of its own service")?;
    for name in ["db", "db.webapp", "kapell-webapp-db"] {
        let (resolved, text) = rig.sh("kapell-other-lonely", &lookup(name))?;
        ensure!(!resolved, "an unrelated stack resolves {name}:\n{text}");
    }
    // Whether a packet from one Docker network reaches another is the kernel's decision
    // (`net.ipv4.ip_forward`, Docker's iptables rules), not kapell's. What kapell decides is which
    // networks a container joins: the unrelated container has an interface on its own stack's
    // network only, and no address inside webapp's subnet.
    let joined = rig.inspect("kapell-other-lonely", "{{range $n, $_ := .NetworkSettings.Networks}}{{$n}} {{end}}")?;
    ensure!(joined == "kapell-other", "the unrelated container joined {joined:?}, not only kapell-other");
    let subnet =
        rig.docker(&["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", "kapell-webapp"])?;
    ensure!(in_subnet(&db_ip, &subnet)?, "db's address {db_ip} is outside webapp's subnet {subnet}");
    // "2: eth0    inet 10.232.7.34/27 brd … scope global eth0"
    let interfaces = rig.sh_ok("kapell-other-lonely", "ip -o -4 addr show")?;
    for line in interfaces.lines() {
        let Some(address) = line.split_whitespace().skip_while(|w| *w != "inet").nth(1) else { continue };
        let address = address.split('/').next().unwrap_or_default();
        ensure!(
            !in_subnet(address, &subnet)?,
            "the unrelated container has {address}, inside webapp's subnet {subnet}:\n{interfaces}"
        );
    }

    let journal = rig.sh_ok("kapell-client-reporter", "timeout 5 wget -q -O- http://db.webapp:5432/journal")?;
    ensure!(journal.contains("started "), "client did not get db's data: {journal}");
    let networks =
        rig.inspect("kapell-client-reporter", "{{range $n, $_ := .NetworkSettings.Networks}}{{$n}} {{end}}")?;
    ensure!(networks == "kapell-client kapell-webapp", "client's networks: {networks}");
    Ok(())
}

/// Three replicas share the service name: it resolves to all three, repeated requests reach each,
/// and `api-<n>` reaches instance n.
fn replicas(rig: &Rig) -> Result<()> {
    rig.systemctl(&["start", "rep.target"])?;
    let mut hostnames = Vec::new();
    let mut addresses = BTreeSet::new();
    for i in 1..=3 {
        rig.wait_active(&format!("rep-api@{i}.service"), Duration::from_secs(30))?;
        let name = format!("kapell-rep-api-{i}");
        hostnames.push(rig.inspect(&name, "{{.Config.Hostname}}")?);
        addresses.insert(rig.address(&name, "kapell-rep")?);
    }
    rig.wait_active("rep-probe.service", Duration::from_secs(30))?;

    let lookup = rig.sh_ok("kapell-rep-probe", "nslookup -type=a api")?;
    let resolved: BTreeSet<String> = lookup
        .split("Name:")
        .skip(1)
        .flat_map(|answer| answer.lines().filter_map(|l| l.strip_prefix("Address:")).map(|a| a.trim().to_string()))
        .collect();
    ensure!(resolved == addresses, "`api` resolves to {resolved:?}, the replicas have {addresses:?}:\n{lookup}");

    let mut reached = BTreeSet::new();
    let mut requests = 0;
    while reached.len() < 3 && requests < 300 {
        let answers = rig.sh_ok("kapell-rep-probe", "for i in $(seq 20); do wget -q -O- http://api/; done")?;
        reached.extend(answers.lines().map(str::to_string));
        requests += 20;
    }
    let all: BTreeSet<String> = hostnames.iter().cloned().collect();
    ensure!(reached == all, "{requests} requests to `api` reached {reached:?} of {all:?}");
    eprintln!("replicas: all 3 reached within {requests} requests to `api`");
    for (i, hostname) in hostnames.iter().enumerate() {
        let answer = rig.sh_ok("kapell-rep-probe", &format!("wget -q -O- http://api-{}/", i + 1))?;
        ensure!(answer.trim() == hostname, "api-{} answered {answer:?}, not {hostname}", i + 1);
    }
    Ok(())
}

/// Both supervisors of a stack, started in one transaction while the stack's network is missing,
/// succeed; afterwards there is exactly one network of that name, labelled as kapell's.
fn simultaneous_start(rig: &Rig) -> Result<()> {
    const ROUNDS: usize = 5;
    let units = ["race-left.service", "race-right.service"];
    let mut apart = Vec::new();
    for round in 1..=ROUNDS {
        let found = rig.docker(&["network", "ls", "-q", "--filter", "name=kapell-race"])?;
        ensure!(found.is_empty(), "round {round}: kapell-race exists before the start");
        rig.systemctl(&["start", units[0], units[1]])
            .with_context(|| format!("round {round}\n{}\n{}", journal(rig, units[0]), journal(rig, units[1])))?;
        for unit in units {
            ensure!(rig.prop(unit, "ActiveState")? == "active", "round {round}: {unit} is not active");
        }
        let [a, b] = units.map(|u| rig.mono(u, "ExecMainStartTimestampMonotonic"));
        apart.push(a?.abs_diff(b?));
        let networks = rig.docker(&["network", "ls", "--filter", "name=kapell-race", "--format", "{{.Name}}"])?;
        ensure!(networks == "kapell-race", "round {round}: networks {networks:?}");
        rig.systemctl(&["stop", units[0], units[1]])?;
        rig.docker(&["network", "rm", "kapell-race"])?;
    }
    // `journalctl --grep` exits 1 when nothing matches: the supervisor that lost every race
    // logged no creation, which counts as none.
    let creations = |unit: &str| -> Result<usize> {
        let out = rig.host.exec(&["journalctl", "-u", unit, "-o", "cat", "--no-pager", "--grep", "created network"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        match out.status.code() {
            Some(0) => Ok(text.lines().count()),
            Some(1) if text.trim().is_empty() => Ok(0),
            _ => bail!("journalctl -u {unit} failed: {}", String::from_utf8_lossy(&out.stderr)),
        }
    };
    let created = units.iter().map(|u| creations(u)).collect::<Result<Vec<_>>>()?.iter().sum::<usize>();
    ensure!(created == ROUNDS, "{created} network creations logged in {ROUNDS} rounds, expected one per round");
    eprintln!("race: {ROUNDS} rounds, supervisors started {apart:?} µs apart; {created} creations logged");
    Ok(())
}

fn journal(rig: &Rig, unit: &str) -> String {
    rig.host.journal(unit).unwrap_or_else(|e| format!("(no journal: {e:#})"))
}
