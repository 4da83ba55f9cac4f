//! `kapell dns`, the responder's main loop (run by kapell-dns.service).
//!
//! Every tick it keeps four things current, each cheap: the catalog (the received generation's
//! `catalog.json`, else one built from the local stacks), the listening addresses and the
//! clients allowed (a fixed loopback address for the host's processes, plus the gateway of each
//! of kapell's Docker networks for its containers), the upstream servers, and the health of
//! every instance (probes when due, this host's units through systemd, the controller's word
//! for the rest, see [`super::pushed_health`]). A change of health rebuilds the answer table,
//! which queries read without waiting for anything.

use super::access::{Access, local_addresses};
use super::catalog::{self, Catalog, Placement};
use super::health::{self, HealthMap, Prober};
use super::pushed_health::{self, Watch};
use super::server::{Handler, Shared};
use super::table::Table;
use super::{resolved, upstream};
use crate::dns_state::{self, Answer, DnsState};
use crate::status::SupervisorStatus;
use crate::systemd::Systemd;
use anyhow::{Context, Result};
use hickory_server::Server;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UdpSocket};
use tokio::signal::unix::{SignalKind, signal};

/// The address host processes reach the responder on (resolved forwards `~kapell` there): not
/// resolved's own stubs (127.0.0.53/54), and only on loopback.
pub const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 153));

/// How often the catalog, networks and upstreams are looked at, and local units polled.
const TICK: Duration = Duration::from_millis(500);
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// How long one poll of the local units may wait for systemd.
const UNIT_POLL_TIMEOUT: Duration = Duration::from_secs(5);
/// Probes in flight at once. The first tick, and every new catalog, finds every probe due: a
/// fleet of a thousand instances would otherwise open a thousand sockets in one go, and past
/// the descriptor limit the same instances would fail every time (and answers with them).
const MAX_PROBES_AT_ONCE: usize = 128;

pub struct Options {
    pub config_dir: PathBuf,
    /// Where host processes ask (default [`LOOPBACK`]).
    pub listen: IpAddr,
    pub port: u16,
    /// This host's `ip` for a catalog built from the local stacks (default: detected).
    pub ip: Option<IpAddr>,
    /// Leave systemd-resolved alone.
    pub no_resolved: bool,
    /// Listen on kapell's Docker networks.
    pub containers: bool,
}

pub fn run(options: Options, prober: Arc<dyn Prober>) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(options, prober))
}

/// The responder's listening sockets, one server per address.
struct Listeners {
    port: u16,
    shared: Arc<Shared>,
    servers: HashMap<IpAddr, Server<Handler>>,
}

impl Listeners {
    async fn bind(&mut self, ip: IpAddr) -> Result<()> {
        if self.servers.contains_key(&ip) {
            return Ok(());
        }
        let address = SocketAddr::new(ip, self.port);
        let udp = UdpSocket::bind(address).await.with_context(|| format!("cannot listen on {address} (UDP)"))?;
        let tcp = TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address} (TCP)"))?;
        let mut server = Server::new(Handler::new(Arc::clone(&self.shared)));
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        self.servers.insert(ip, server);
        log::info!("kapell dns: listening on {address}");
        Ok(())
    }

    async fn keep_only(&mut self, wanted: &[IpAddr]) {
        let gone: Vec<IpAddr> = self.servers.keys().filter(|ip| !wanted.contains(ip)).copied().collect();
        for ip in gone {
            if let Some(mut server) = self.servers.remove(&ip) {
                let _ = server.shutdown_gracefully().await;
                log::info!("kapell dns: no longer listening on {ip}");
            }
        }
    }

    fn addresses(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self.servers.keys().copied().collect();
        out.sort();
        out
    }
}

/// The catalog this host answers from, and a word on where it came from.
pub fn load_catalog(config_dir: &Path, ip: Option<IpAddr>) -> Result<(Catalog, String)> {
    let received = crate::host_units::received_dir();
    if let Some(catalog) = Catalog::load(&received)? {
        return Ok((catalog, received.join(catalog::FILE).display().to_string()));
    }
    let checked = crate::host::load(config_dir, &[], &crate::validate::UnitSearchPath::from_env())
        .with_context(|| format!("cannot read the stacks in {}", config_dir.display()))?;
    let runs_here = crate::host::runs_here(config_dir);
    // A broken stack is reported by `kapell check` and the generator; the others still resolve.
    let stacks: Vec<crate::model::Stack> = checked.stacks.into_iter().filter(|s| runs_here(s)).collect();
    let host = host_name();
    let ip = ip.or_else(primary_address).context(
        "cannot tell this host's address for the names of its services: give it with `kapell dns --ip ADDRESS`",
    )?;
    let catalog = catalog::build(&host, &[Placement { host: &host, ip, stacks: &stacks }]);
    Ok((catalog, format!("the stacks in {}", config_dir.display())))
}

/// What [`load_catalog`] reads, cheaply compared: the received set's catalog, else every file
/// of the configuration directory (each by path, inode, size and modification time), and the
/// address the host's own services are named at.
#[derive(Debug, Default, PartialEq)]
struct Sources {
    files: Vec<(PathBuf, u64, u64, Option<std::time::SystemTime>)>,
    ip: Option<IpAddr>,
}

impl Sources {
    fn of(config_dir: &Path, ip: Option<IpAddr>) -> Sources {
        use std::os::unix::fs::MetadataExt as _;
        let stamp = |path: PathBuf| {
            let meta = std::fs::metadata(&path).ok()?;
            Some((path, meta.ino(), meta.size(), meta.modified().ok()))
        };
        let catalog = crate::host_units::received_dir().join(catalog::FILE);
        if let Some(file) = stamp(catalog) {
            return Sources { files: vec![file], ip: None };
        }
        let mut files: Vec<_> =
            std::fs::read_dir(config_dir).into_iter().flatten().flatten().filter_map(|e| stamp(e.path())).collect();
        files.sort();
        Sources { files, ip: ip.or_else(primary_address) }
    }
}

fn host_name() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "localhost".into())
}

/// The address this host would use towards the outside (the source of its default route), else
/// its first address that is neither loopback nor link-local nor a container bridge's.
pub fn primary_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // connect(2) on UDP sends nothing: it only picks the route and so the source address.
    if socket.connect("192.0.2.1:53").is_ok()
        && let Ok(local) = socket.local_addr()
    {
        return Some(local.ip());
    }
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    addrs
        .filter(|a| !["br-", "docker", "veth", "lo"].iter().any(|p| a.interface_name.starts_with(p)))
        .filter_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|v4| v4.ip())))
        .find(|ip| !ip.is_loopback() && !ip.is_link_local())
        .map(IpAddr::V4)
}

async fn serve(options: Options, prober: Arc<dyn Prober>) -> Result<()> {
    crate::logging::init(&[("KAPELL_COMPONENT", "dns")]);
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let shared = Arc::new(Shared::default());
    let systemd = Systemd::system().await.ok();
    let mut sources = Sources::of(&options.config_dir, options.ip);
    // What was said of the last catalog that could not be read: said again only when it changes
    // (a bad catalog is read again at every look, every 2 s).
    let mut catalog_error: Option<String> = None;
    let (mut catalog, mut origin) = match load_catalog(&options.config_dir, options.ip) {
        Ok(loaded) => loaded,
        Err(e) => {
            catalog_error = Some(format!("{e:#}"));
            // Containers resolve every name through this responder: without it they would resolve
            // none. So it serves without `.kapell` names, and reads the catalog again at every
            // look, as it does when a catalog goes bad later.
            log::error!("kapell dns: no .kapell names until this is fixed: {e:#}");
            sources = Sources::default();
            (Catalog::default(), format!("none: {e:#}"))
        }
    };
    let mut pushed = Watch::new(pushed_health::path());
    let mut health = HealthMap::initial(&catalog);
    health.apply_pushed(&catalog, &pushed);
    // The host's own processes are answered from the first query: the first table, who may ask
    // from this host and where to forward are in place before anything listens. Docker's
    // networks only add to them when Docker answers, which at boot can take its whole timeout:
    // no `.kapell` name is NXDOMAIN meanwhile (docs/discovery.md, "Starting").
    if let Some(systemd) = &systemd {
        poll_units(systemd, &catalog, &mut health).await;
    }
    *shared.table.write().map_err(|_| anyhow::anyhow!("poisoned"))? = Arc::new(Table::build(&catalog, &health));
    *shared.access.write().map_err(|_| anyhow::anyhow!("poisoned"))? =
        Arc::new(Access { local: local_addresses(), networks: Vec::new() });
    *shared.upstreams.write().map_err(|_| anyhow::anyhow!("poisoned"))? =
        Arc::new(upstream::servers(&[options.listen]));
    let mut listeners = Listeners { port: options.port, shared: Arc::clone(&shared), servers: HashMap::new() };
    listeners.bind(options.listen).await?;
    let server = SocketAddr::new(options.listen, options.port);
    let resolved = match (&systemd, options.no_resolved) {
        (Some(systemd), false) => Some(match resolved::route(systemd, server).await {
            Ok(true) => true,
            Ok(false) => {
                log::warn!(
                    "kapell dns: this host has no systemd-resolved: its own processes cannot resolve .kapell names \
                     unless its resolver forwards the domain to {server}"
                );
                false
            }
            Err(e) => {
                log::warn!("kapell dns: cannot route .kapell through systemd-resolved: {e:#}");
                false
            }
        }),
        _ => None,
    };
    let (results_tx, mut results) = tokio::sync::mpsc::unbounded_channel::<(health::InstanceKey, u64, bool)>();
    let mut turns = ProbeTurns::default();
    let mut next_probe: HashMap<health::InstanceKey, Instant> = HashMap::new();
    let probing = Arc::new(tokio::sync::Semaphore::new(MAX_PROBES_AT_ONCE));
    let mut last_refresh: Option<Instant> = None;
    // Docker's networks are asked in a task of their own: a Docker that accepts the connection
    // and then hangs (up to the request's timeout) holds up neither probes nor answers.
    let mut asking_docker: Option<tokio::task::JoinHandle<(Access, Vec<IpAddr>)>> = None;
    // Its answer, handled in the pass its arrival wakes; and whether it has answered once
    // (READY=1 waits for that).
    let mut docker_said: Option<(Access, Vec<IpAddr>)> = None;
    let mut docker_answered = false;
    let mut changed = true;
    let mut ticker = tokio::time::interval(TICK);
    let mut ready = false;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            Some((key, turn, ok)) = results.recv() => {
                if turns.is_latest(&key, turn) {
                    changed |= health.set(key, ok);
                }
                continue;
            }
            answer = async { asking_docker.as_mut().expect("guarded").await }, if asking_docker.is_some() => {
                asking_docker = None;
                docker_answered = true;
                docker_said = answer.ok();
            }
            _ = ticker.tick() => {}
        }
        if last_refresh.is_none_or(|t| t.elapsed() >= REFRESH_EVERY) {
            last_refresh = Some(Instant::now());
            // Read and parsed again only when what it is read from changed: a catalog of 1,000
            // services takes tens of milliseconds, on the thread that answers the queries.
            let now = Sources::of(&options.config_dir, options.ip);
            if now != sources {
                sources = now;
                let loaded = load_catalog(&options.config_dir, options.ip);
                if loaded.is_ok() {
                    catalog_error = None;
                }
                match loaded {
                    Ok((new, from)) if new != catalog => {
                        log::info!("kapell dns: catalog of {} services from {from}", new.services.len());
                        health = health.carried_over(&catalog, &new);
                        health.apply_pushed(&new, &pushed);
                        next_probe.clear();
                        turns.new_catalog();
                        (catalog, origin) = (new, from);
                        changed = true;
                    }
                    // The same services, from elsewhere (or fixed back to what was there).
                    Ok((_, from)) if from != origin => {
                        origin = from;
                        changed = true;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // Tried again at the next look, whether or not its sources change.
                        sources = Sources::default();
                        let error = format!("{e:#}");
                        if catalog_error.as_ref() != Some(&error) {
                            log::warn!("kapell dns: keeping the catalog it has: {error}");
                            catalog_error = Some(error);
                        }
                    }
                }
            }
            if asking_docker.is_none() {
                asking_docker = Some(tokio::spawn(networks(options.containers)));
            }
        }
        if let Some((access, gateways)) = docker_said.take() {
            let listening = listeners.addresses();
            for gateway in &gateways {
                if let Err(e) = listeners.bind(*gateway).await {
                    log::warn!("kapell dns: {e:#}");
                }
            }
            let mut wanted = gateways.clone();
            wanted.push(options.listen);
            listeners.keep_only(&wanted).await;
            // Published also when nothing else changed (a gateway bound only at a later look):
            // a container's supervisor waits for its gateway in dns.json before it names it.
            changed |= listeners.addresses() != listening;
            // Published when they change: containers started later are given them.
            let upstreams = Arc::new(upstream::servers(&listeners.addresses()));
            changed |= shared.upstreams() != upstreams;
            *shared.upstreams.write().map_err(|_| anyhow::anyhow!("poisoned"))? = upstreams;
            let access = Arc::new(access);
            if **shared.access.read().map_err(|_| anyhow::anyhow!("poisoned"))? != *access {
                *shared.access.write().map_err(|_| anyhow::anyhow!("poisoned"))? = access;
                changed = true;
            }
        }
        if pushed.poll() {
            changed |= health.apply_pushed(&catalog, &pushed);
        }
        let now = Instant::now();
        for planned in health::probes(&catalog) {
            if next_probe.get(&planned.key).is_some_and(|due| *due > now) {
                continue;
            }
            next_probe.insert(planned.key.clone(), now + planned.interval);
            let (prober, tx, probing) = (Arc::clone(&prober), results_tx.clone(), Arc::clone(&probing));
            let turn = turns.next();
            tokio::spawn(async move {
                let Ok(_slot) = probing.acquire().await else { return };
                let ok = prober.probe(&planned.check, planned.address, planned.timeout).await;
                let _ = tx.send((planned.key, turn, ok));
            });
        }
        if let Some(systemd) = &systemd {
            changed |= poll_units(systemd, &catalog, &mut health).await;
        }
        if changed {
            changed = false;
            let table = Table::build(&catalog, &health);
            let state = state_of(&catalog, &health, &table, &listeners, resolved, &origin);
            *shared.table.write().map_err(|_| anyhow::anyhow!("poisoned"))? = Arc::new(table);
            if let Err(e) = dns_state::write(&state) {
                log::warn!("kapell dns: cannot write {}: {e}", dns_state::path().display());
            }
        }
        // READY=1 once Docker's networks are listened on too: a container started after
        // kapell-dns finds its gateway's listener there.
        if !ready && docker_answered {
            ready = true;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    dns_state::remove();
    if resolved == Some(true) {
        resolved::unroute().await?;
    }
    listeners.keep_only(&[]).await;
    Ok(())
}

/// Who may ask, and the gateways to listen on: this host's addresses, and each of kapell's
/// Docker networks (none when Docker does not answer: host processes are still served).
async fn networks(containers: bool) -> (Access, Vec<IpAddr>) {
    let mut access = Access { local: local_addresses(), networks: Vec::new() };
    let mut gateways = Vec::new();
    if !containers {
        return (access, gateways);
    }
    match crate::supervisor::stack_networks().await {
        Ok(list) => {
            for (_, subnet, gateway) in list {
                if let (Ok(net), Ok(gw)) = (subnet.parse::<ipnet::IpNet>(), gateway.parse::<IpAddr>()) {
                    access.networks.push(net);
                    gateways.push(gw);
                }
            }
        }
        Err(e) => log::debug!("kapell dns: no Docker networks: {e:#}"),
    }
    access.networks.sort();
    access.networks.dedup();
    gateways.sort();
    gateways.dedup();
    (access, gateways)
}

/// The order of the probes: each one numbered as it starts, so that a result that comes in
/// after a later one's (a probe that waited for its slot, or hung up to its timeout while the
/// next interval's probe answered) or that was started for a catalog replaced since (an
/// instance moved to another address) does not overwrite what is known now.
#[derive(Debug, Default)]
struct ProbeTurns {
    next: u64,
    /// The first turn of the current catalog.
    catalog_from: u64,
    /// The latest turn whose result was taken, per instance.
    taken: HashMap<health::InstanceKey, u64>,
}

impl ProbeTurns {
    fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn new_catalog(&mut self) {
        self.catalog_from = self.next + 1;
        self.taken.clear();
    }

    /// Whether the result of probe `turn` of `key` is newer than anything known of it.
    fn is_latest(&mut self, key: &health::InstanceKey, turn: u64) -> bool {
        if turn < self.catalog_from || self.taken.get(key).is_some_and(|t| *t > turn) {
            return false;
        }
        self.taken.insert(key.clone(), turn);
        true
    }
}

/// Reads this host's units of the catalog; whether any instance changed.
async fn poll_units(systemd: &Systemd, catalog: &Catalog, health: &mut HealthMap) -> bool {
    let units = health::local_units(catalog);
    if units.is_empty() {
        return false;
    }
    let names: Vec<String> = units.iter().map(|(u, _)| u.clone()).collect();
    // Bounded: a systemd that does not answer holds back the probes' results and the
    // catalog's changes too, which the same loop publishes. The last known states stand.
    let infos = match tokio::time::timeout(UNIT_POLL_TIMEOUT, systemd.liveness(&names)).await {
        Ok(Ok(infos)) => infos,
        Ok(Err(e)) => {
            log::debug!("kapell dns: {e:#}");
            return false;
        }
        Err(_) => {
            log::warn!("kapell dns: systemd did not say how the local units are within {UNIT_POLL_TIMEOUT:?}");
            return false;
        }
    };
    let probes = crate::health::state::dir();
    // An instance with replicas is healthy while any of its units is.
    let mut up: HashMap<health::InstanceKey, bool> = HashMap::new();
    for ((_, key), info) in units.iter().zip(&infos) {
        let supervisor = SupervisorStatus::parse(&info.status_text);
        let starting = matches!(supervisor, Some(SupervisorStatus::Starting | SupervisorStatus::Pulling(_)));
        // What the unit's prober published for this run (a native service's check, `cmd` too),
        // else what the supervisor of a container tells systemd.
        let published = crate::status::current_probe(&probes, info).and_then(|p| p.health());
        let health = published.or_else(|| supervisor.as_ref().and_then(SupervisorStatus::health));
        let ok =
            info.active_state == "active" && !starting && health.is_none_or(|h| h == crate::status::Health::Healthy);
        *up.entry(key.clone()).or_default() |= ok;
    }
    let mut changed = false;
    for (key, ok) in up {
        changed |= health.set(key, ok);
    }
    changed
}

fn state_of(
    catalog: &Catalog,
    health: &HealthMap,
    table: &Table,
    listeners: &Listeners,
    resolved: Option<bool>,
    origin: &str,
) -> DnsState {
    let mut names = BTreeMap::new();
    for (i, service) in catalog.services.iter().enumerate() {
        let name = service.name().trim_end_matches('.').to_string();
        let answers = table
            .summary
            .get(&name)
            .into_iter()
            .flatten()
            .map(|(host, ip)| Answer {
                host: host.clone(),
                ip: *ip,
                source: health
                    .get(catalog, i, host)
                    .map(|(_, s)| format!("{s:?}").to_ascii_lowercase())
                    .unwrap_or_default(),
            })
            .collect();
        names.insert(name, answers);
    }
    DnsState {
        pid: std::process::id(),
        listening: listeners.addresses(),
        port: listeners.port,
        upstreams: listeners.shared.upstreams().to_vec(),
        resolved,
        names,
        catalog: origin.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(service: &str) -> health::InstanceKey {
        health::InstanceKey { stack: "data".into(), service: service.into(), host: "h1".into() }
    }

    /// A probe's result counts only if no later probe of the instance answered first, and only
    /// for the catalog it was started for.
    #[test]
    fn a_late_probe_result_overwrites_nothing_newer() {
        let mut turns = ProbeTurns::default();
        let (first, second) = (turns.next(), turns.next());
        assert!(turns.is_latest(&key("db"), second), "the later probe answers first");
        assert!(!turns.is_latest(&key("db"), first), "the earlier one, later, is dropped");
        assert!(turns.is_latest(&key("cache"), first), "another instance's result is its own");
        let before_reload = turns.next();
        turns.new_catalog();
        assert!(!turns.is_latest(&key("web"), before_reload), "started for the catalog replaced since");
        let after = turns.next();
        assert!(turns.is_latest(&key("web"), after));
        let next = turns.next();
        assert!(turns.is_latest(&key("db"), next), "a new catalog starts every instance afresh");
    }
}
