//! A small client of systemd's service manager (`org.freedesktop.systemd1`) on the system bus.
//!
//! Used by `kapell apply`, `kapell status` and the fleet's `kapell receive`: reload, start, stop
//! and restart units, wait for their jobs with the result systemd reports, and read the unit
//! properties an operator sees in `systemctl status`. zbus finds the bus at
//! `DBUS_SYSTEM_BUS_ADDRESS`, else `/run/dbus/system_bus_socket`, so tests can point it at a
//! booted container's bus.
//!
//! Jobs are awaited the way `systemctl` does it: listen for `JobRemoved` *before* enqueueing
//! ([`Systemd::watch_jobs`]), then match finished jobs by object path, so a job that ends before
//! the enqueue call even returns is not missed; see [`JobWatcher`] for why the signals are
//! drained from the first moment and how a missed one is recovered. Calls are kept a bounded
//! number in flight, under the bus daemon's limit of pending replies per connection.

mod jobs;
mod proxy;
mod resolve;

use anyhow::{Context, Result, anyhow};
use futures_util::StreamExt as _;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;
use zbus::Variant;
use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath, OwnedVariant};

pub use jobs::JobWatcher;
pub use proxy::{ManagerProxy, UnitListEntry};
pub use resolve::ResolveManagerProxy;

/// Job mode for every job kapell enqueues: like `systemctl`'s default, a new job replaces
/// conflicting queued ones.
const MODE: &str = "replace";

/// Method calls kapell keeps in flight at once. The bus daemon limits the replies a connection
/// may await (`max_replies_per_connection`, 128 in Debian's `system.conf`); a few dozen already
/// hide the round trip.
const MAX_IN_FLIGHT: usize = 32;

/// What [`Systemd::listed_units`] reads of each unit beyond its states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// A fleet reply's: the last change, the run, a service's restarts and status text.
    Brief,
    /// `kapell dns`'s: the run and a service's status text, of active units only.
    Liveness,
}

/// A connection to the system instance of systemd (a clone shares the connection).
#[derive(Clone)]
pub struct Systemd {
    connection: Connection,
    manager: ManagerProxy<'static>,
}

impl Systemd {
    /// Connects to the system bus and the service manager.
    pub async fn system() -> Result<Self> {
        let connection = Connection::system().await.map_err(dbus_error).context(
            "cannot connect to the system bus (is this a systemd host? DBUS_SYSTEM_BUS_ADDRESS overrides the socket)",
        )?;
        let manager = ManagerProxy::builder(&connection)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(dbus_error)
            .context("cannot reach systemd on the system bus")?;
        Ok(Self { connection, manager })
    }

    /// The manager proxy, for calls this module does not wrap.
    pub fn manager(&self) -> &ManagerProxy<'static> {
        &self.manager
    }

    /// systemd-resolved's manager, on the same connection.
    pub async fn resolve(&self) -> Result<ResolveManagerProxy<'static>> {
        ResolveManagerProxy::builder(&self.connection)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(dbus_error)
            .context("cannot reach systemd-resolved on the system bus")
    }

    /// Starts listening for finished jobs. Call it before enqueueing the jobs to wait for.
    ///
    /// Like `systemctl start`, this adds a match rule for `JobRemoved` but does not call the
    /// manager's `Subscribe`: systemd sends a job's signals to the client that enqueued it
    /// whether or not anyone is subscribed. A subscriber makes systemd emit `UnitNew` and
    /// `PropertiesChanged` for every unit it reloads, which at 1,000 units cost PID 1 about
    /// 0.2 s of CPU per `daemon-reload` (docs/benchmarks.md, apply).
    pub async fn watch_jobs(&self) -> Result<JobWatcher> {
        let stream =
            self.manager.receive_job_removed().await.map_err(dbus_error).context("cannot watch systemd jobs")?;
        Ok(JobWatcher::new(stream))
    }

    /// `daemon-reload`: reruns the generators, reloads every unit file; returns once done.
    pub async fn reload(&self) -> Result<()> {
        self.manager.reload().await.map_err(dbus_error).context("systemd daemon-reload failed")
    }

    /// Enqueues a start job for `unit` (and, as systemd does, for what it requires and wants).
    pub async fn start(&self, unit: &str) -> Result<Job> {
        self.enqueue(JobKind::Start, unit).await
    }

    /// Enqueues a stop job for `unit` (units that require it stop too).
    pub async fn stop(&self, unit: &str) -> Result<Job> {
        self.enqueue(JobKind::Stop, unit).await
    }

    /// `systemctl enable --no-reload UNIT` (its `[Install]` links under /etc); whether anything
    /// changed. systemd sees the links at the next reload, which the caller makes (the caller's
    /// own, not a second one).
    pub async fn enable_no_reload(&self, unit: &str) -> Result<bool> {
        let (_, changes) = self
            .manager
            .enable_unit_files(&[unit], false, false)
            .await
            .map_err(dbus_error)
            .with_context(|| format!("cannot enable {unit}"))?;
        Ok(!changes.is_empty())
    }

    /// Enqueues a restart job for `unit`; a unit that is not running is started.
    pub async fn restart(&self, unit: &str) -> Result<Job> {
        self.enqueue(JobKind::Restart, unit).await
    }

    /// Enqueues a job of `kind` for each unit, a bounded number of calls at a time; one result
    /// per unit, in order (systemd may refuse some and accept the others).
    pub async fn enqueue_all(&self, jobs: &[(JobKind, &str)]) -> Vec<Result<Job>> {
        futures_util::stream::iter(jobs.iter().map(|&(kind, unit)| self.enqueue(kind, unit)))
            .buffered(MAX_IN_FLIGHT)
            .collect()
            .await
    }

    async fn enqueue(&self, kind: JobKind, unit: &str) -> Result<Job> {
        let path = match kind {
            JobKind::Start => self.manager.start_unit(unit, MODE).await,
            JobKind::Stop => self.manager.stop_unit(unit, MODE).await,
            JobKind::Restart => self.manager.restart_unit(unit, MODE).await,
        };
        let path = path.map_err(dbus_error).with_context(|| format!("cannot {kind} {unit}"))?;
        Ok(Job { unit: unit.to_string(), kind, path })
    }

    /// Sends SIGKILL to the main process of `unit` (what the host's prober does to an unhealthy
    /// service, so that systemd's `Restart=` applies and `NRestarts` counts it).
    pub async fn kill_main(&self, unit: &str) -> Result<()> {
        const SIGKILL: i32 = 9;
        self.manager
            .kill_unit(unit, "main", SIGKILL)
            .await
            .map_err(dbus_error)
            .with_context(|| format!("cannot kill {unit}"))
    }

    /// Creates `<name>.timer`, which runs `argv` once as `<name>.service`, `after` from now
    /// (within `accuracy`): what `systemd-run --unit=<name> --on-active=…` creates. systemd
    /// keeps the time, whatever becomes of the caller; the timer goes away once it has elapsed
    /// or is stopped. Refusals (a timer of that name exists, bad properties) are errors.
    pub async fn start_transient_timer(
        &self,
        name: &str,
        after: Duration,
        accuracy: Duration,
        description: &str,
        argv: &[String],
    ) -> Result<()> {
        let timer = format!("{name}.timer");
        let service = format!("{name}.service");
        let usec = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let on_active: Vec<(&str, u64)> = vec![("OnActiveSec", usec(after))];
        let timer_properties = [
            ("Description", Variant::from(description)),
            ("TimersMonotonic", Variant::from(on_active)),
            ("AccuracyUSec", Variant::from(usec(accuracy))),
            // As systemd-run does: a transient timer unloads once it has elapsed.
            ("RemainAfterElapse", Variant::from(false)),
        ];
        let program = argv.first().context("a timer needs a command to run")?;
        let exec_start: Vec<(&str, &[String], bool)> = vec![(program.as_str(), argv, false)];
        let service_properties =
            vec![("Description", Variant::from(description)), ("ExecStart", Variant::from(exec_start))];
        self.manager
            .start_transient_unit(&timer, "fail", &timer_properties, &[(service.as_str(), service_properties)])
            .await
            .map_err(dbus_error)
            .with_context(|| format!("cannot start the transient timer {timer}"))?;
        Ok(())
    }

    /// Stops `unit` if systemd has it loaded; a unit that is not (never started, or a transient
    /// unit that went away) is already stopped. Does not wait for the stop job.
    pub async fn stop_if_loaded(&self, unit: &str) -> Result<()> {
        match self.manager.stop_unit(unit, MODE).await {
            Ok(_) => Ok(()),
            Err(zbus::Error::MethodError(name, _, _)) if name.ends_with(".NoSuchUnit") => Ok(()),
            Err(e) => Err(dbus_error(e)).with_context(|| format!("cannot stop {unit}")),
        }
    }

    /// The manager's environment (what generators inherit), as `KEY=value` strings.
    pub async fn environment(&self) -> Result<Vec<String>> {
        self.manager.environment().await.map_err(dbus_error).context("cannot read systemd's environment")
    }

    /// The state of each of `names`, loading units from disk as needed (as `systemctl status`
    /// does), in the order of `names`. A unit without a file has `load_state` `not-found`.
    /// A bounded number of units is read at a time (see [`MAX_IN_FLIGHT`]).
    pub async fn units(&self, names: &[String]) -> Result<Vec<UnitInfo>> {
        let mut infos = Vec::with_capacity(names.len());
        let mut calls = futures_util::stream::iter(names.iter().map(|n| self.unit(n))).buffered(MAX_IN_FLIGHT);
        while let Some(info) = calls.next().await {
            infos.push(info?);
        }
        Ok(infos)
    }

    /// The load, active and sub state of each of `names`, in the order of `names`, read in one
    /// `ListUnitsByNames` call per few thousand names instead of two or three calls per unit:
    /// about 26 ms for 1,000 units where [`Systemd::units`] takes a second. The other fields of
    /// [`UnitInfo`] stay empty; read a unit whose state leaves a question open with
    /// [`Systemd::unit`]. Units are loaded from disk as needed, as [`Systemd::units`] does.
    pub async fn states(&self, names: &[String]) -> Result<Vec<UnitInfo>> {
        let asked: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut infos = Vec::with_capacity(names.len());
        for ((name, _, load_state, active_state, sub_state, ..), asked) in
            self.list_by_names(&asked).await?.into_iter().zip(&asked)
        {
            anyhow::ensure!(name == *asked, "systemd answered for {name} when asked for {asked}");
            infos.push(UnitInfo { name, load_state, active_state, sub_state, ..UnitInfo::default() });
        }
        Ok(infos)
    }

    /// `ListUnitsByNames`: one row per name, in the order of `names` (an alias's row is the unit
    /// it stands for). Units are loaded from disk as needed.
    async fn list_by_names(&self, names: &[&str]) -> Result<Vec<UnitListEntry>> {
        // A D-Bus message may be up to 128 MiB; chunks keep each reply small all the same.
        const PER_CALL: usize = 4096;
        let mut rows = Vec::with_capacity(names.len());
        for chunk in names.chunks(PER_CALL) {
            let listed =
                self.manager.list_units_by_names(chunk).await.map_err(dbus_error).with_context(|| {
                    format!("cannot ask systemd about {}", chunk.first().copied().unwrap_or_default())
                })?;
            anyhow::ensure!(listed.len() == chunk.len(), "systemd answered {} of {} units", listed.len(), chunk.len());
            rows.extend(listed);
        }
        Ok(rows)
    }

    /// [`Systemd::states`], then every property of the units for which `detail` says the
    /// states alone do not answer the caller's question (timestamps, results), one by one.
    pub async fn states_then_units(
        &self,
        names: &[String],
        detail: impl Fn(&UnitInfo) -> bool,
    ) -> Result<Vec<UnitInfo>> {
        let mut infos = self.states(names).await?;
        let wanted: Vec<usize> = (0..infos.len()).filter(|&i| detail(&infos[i])).collect();
        let mut calls =
            futures_util::stream::iter(wanted.iter().map(|&i| self.unit(&names[i]))).buffered(MAX_IN_FLIGHT);
        let mut at = wanted.iter();
        while let Some(info) = calls.next().await {
            let &i = at.next().expect("one answer per call");
            infos[i] = info?;
        }
        Ok(infos)
    }

    /// What a fleet reply says of each of `names`, in the order of `names`: load, active and
    /// sub state of all of them in one `ListUnitsByNames`, then for each unit only
    /// `StateChangeTimestamp` and `InvocationID` (and a service's `NRestarts` and `StatusText`),
    /// one small `Get` each. [`Systemd::units`] reads every property instead: a service's
    /// `GetAll` is a 9 KB answer that costs PID 1 about 0.7 ms of CPU and the bus daemon 0.9 ms,
    /// for every unit of every reply (docs/benchmarks.md, fleet). The other fields stay empty.
    pub async fn brief_units(&self, names: &[String]) -> Result<Vec<UnitInfo>> {
        self.listed_units(names, Reads::Brief).await
    }

    /// What `kapell dns` needs to say whether each of `names` answers, in the order of `names`:
    /// the states of all in one `ListUnitsByNames`, and only for the active ones their
    /// `InvocationID` (is a published probe result this run's?) and a service's `StatusText` (a
    /// container's health, as its supervisor tells systemd), one small `Get` each. A unit that is
    /// not active answers nothing, so nothing more of it is read. The responder polls this twice
    /// a second: one call plus at most two per running unit, where [`Systemd::unit`] costs three
    /// per unit, two of them `GetAll`s (a service's is a 9 KB answer). The other fields stay empty.
    pub async fn liveness(&self, names: &[String]) -> Result<Vec<UnitInfo>> {
        self.listed_units(names, Reads::Liveness).await
    }

    /// The states of `names` in one `ListUnitsByNames`, then the small `Get`s `reads` says, a
    /// bounded number in flight ([`Systemd::brief_units`], [`Systemd::liveness`]).
    async fn listed_units(&self, names: &[String], reads: Reads) -> Result<Vec<UnitInfo>> {
        let asked: Vec<&str> = names.iter().map(String::as_str).collect();
        let rows = self.list_by_names(&asked).await?;
        let read = |((_, _, load_state, active_state, sub_state, _, path, ..), name): (UnitListEntry, String)| async move {
            let mut info = UnitInfo { load_state, active_state, sub_state, ..UnitInfo::default() };
            if reads == Reads::Liveness && info.active_state != "active" {
                info.name = name;
                return Ok(info);
            }
            let context = || format!("cannot read the state of {name}");
            let properties = self.properties(path).await.map_err(dbus_error).with_context(context)?;
            let get = async |interface: zbus::names::InterfaceName<'static>, property: &str| {
                properties.get(interface, property).await.map_err(dbus_error).with_context(context)
            };
            if reads == Reads::Brief {
                info.state_change_usec =
                    u64::try_from(get(proxy::UNIT_INTERFACE, "StateChangeTimestamp").await?).unwrap_or(0);
            }
            info.invocation_id = Vec::<u8>::try_from(get(proxy::UNIT_INTERFACE, "InvocationID").await?)
                .map(|id| hex(&id))
                .unwrap_or_default();
            if name.ends_with(".service") {
                if reads == Reads::Brief {
                    info.restarts = u32::try_from(get(proxy::SERVICE_INTERFACE, "NRestarts").await?).unwrap_or(0);
                }
                info.status_text =
                    String::try_from(get(proxy::SERVICE_INTERFACE, "StatusText").await?).unwrap_or_default();
            }
            info.name = name;
            Ok::<_, anyhow::Error>(info)
        };
        let mut calls =
            futures_util::stream::iter(rows.into_iter().zip(names.iter().cloned()).map(read)).buffered(MAX_IN_FLIGHT);
        let mut infos = Vec::with_capacity(names.len());
        while let Some(info) = calls.next().await {
            infos.push(info?);
        }
        Ok(infos)
    }

    /// The properties of the unit object at `path`, read afresh at every call (no cache: each
    /// read is one answer of systemd's, not a value kept in sync by signals).
    async fn properties(&self, path: zbus::OwnedObjectPath) -> zbus::Result<zbus::fdo::PropertiesProxy<'_>> {
        zbus::fdo::PropertiesProxy::builder(&self.connection)
            .destination(proxy::DESTINATION)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
    }

    /// The state of one unit (see [`Systemd::units`]).
    pub async fn unit(&self, name: &str) -> Result<UnitInfo> {
        let context = || format!("cannot read the state of {name}");
        let path = self.manager.load_unit(name).await.map_err(dbus_error).with_context(context)?;
        let properties = self.properties(path).await.map_err(dbus_error).with_context(context)?;
        let mut unit = properties.get_all(proxy::UNIT_INTERFACE).await.map_err(dbus_error).with_context(context)?;
        let mut service = if name.ends_with(".service") {
            properties.get_all(proxy::SERVICE_INTERFACE).await.map_err(dbus_error).with_context(context)?
        } else {
            HashMap::new()
        };
        Ok(UnitInfo {
            name: name.to_string(),
            load_state: take(&mut unit, "LoadState").unwrap_or_default(),
            active_state: take(&mut unit, "ActiveState").unwrap_or_default(),
            sub_state: take(&mut unit, "SubState").unwrap_or_default(),
            active_enter_usec: take(&mut unit, "ActiveEnterTimestamp").unwrap_or(0),
            state_change_usec: take(&mut unit, "StateChangeTimestamp").unwrap_or(0),
            inactive_exit_usec: take(&mut unit, "InactiveExitTimestamp").unwrap_or(0),
            main_pid: take(&mut service, "MainPID").unwrap_or(0),
            restarts: take(&mut service, "NRestarts").unwrap_or(0),
            status_text: take(&mut service, "StatusText").unwrap_or_default(),
            result: take(&mut service, "Result").unwrap_or_default(),
            timeout_start_usec: take(&mut service, "TimeoutStartUSec").unwrap_or(0),
            timeout_stop_usec: take(&mut service, "TimeoutStopUSec").unwrap_or(0),
            invocation_id: take::<Vec<u8>>(&mut unit, "InvocationID").map(|id| hex(&id)).unwrap_or_default(),
        })
    }
    /// What systemd knows of each of `names` (plain or instance names, not templates), in the
    /// order of `names`, whether or not a unit file of that name exists: built-in units
    /// (`-.slice`, `init.scope`), instances of templates, other generators' output, transient
    /// and alias names. Units are loaded as needed (`ListUnitsByNames`), and the file of each
    /// known one is asked for.
    pub async fn origins(&self, names: &[&str]) -> Result<Vec<UnitOrigin>> {
        let listed = self.list_by_names(names).await?;
        let rows = names.iter().zip(listed).map(|(asked, row)| (asked.to_string(), row)).collect();
        self.with_fragments(rows).await
    }

    /// The loaded units whose names match one of the glob `patterns` (fnmatch, as
    /// `systemctl list-units PATTERN`), with their files.
    pub async fn loaded_matching(&self, patterns: &[&str]) -> Result<Vec<UnitOrigin>> {
        if patterns.is_empty() {
            return Ok(Vec::new());
        }
        let listed = self
            .manager
            .list_units_by_patterns(&[], patterns)
            .await
            .map_err(dbus_error)
            .context("cannot list systemd's units")?;
        self.with_fragments(listed.into_iter().map(|row| (row.0.clone(), row)).collect()).await
    }

    /// Reads `FragmentPath` of every row systemd has something for (loaded, or running without
    /// a file).
    async fn with_fragments(&self, rows: Vec<(String, UnitListEntry)>) -> Result<Vec<UnitOrigin>> {
        let origin = |(asked, row): (String, UnitListEntry)| async move {
            let (id, _, load_state, active_state, _, _, path, ..) = row;
            let mut origin = UnitOrigin { asked, id, load_state, active_state, fragment_path: String::new() };
            if origin.is_known() {
                let context = || format!("cannot read the unit file of {}", origin.id);
                let properties = self.properties(path).await.map_err(dbus_error).with_context(context)?;
                let fragment = properties
                    .get(proxy::UNIT_INTERFACE, "FragmentPath")
                    .await
                    .map_err(dbus_error)
                    .with_context(context)?;
                origin.fragment_path = String::try_from(fragment).unwrap_or_default();
            }
            Ok::<_, anyhow::Error>(origin)
        };
        let mut calls = futures_util::stream::iter(rows.into_iter().map(origin)).buffered(MAX_IN_FLIGHT);
        let mut origins = Vec::new();
        while let Some(origin) = calls.next().await {
            origins.push(origin?);
        }
        Ok(origins)
    }
}

/// Bytes as lower-case hex (how `$INVOCATION_ID` spells systemd's invocation ID).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes and converts one property; `None` if missing or of another type (older systemd).
fn take<T: TryFrom<OwnedVariant>>(properties: &mut HashMap<String, OwnedVariant>, key: &str) -> Option<T> {
    properties.remove(key).and_then(|v| T::try_from(v).ok())
}

/// A D-Bus error as one sentence: systemd's own message (`Unit foo.service not found.`)
/// rather than the error name in front of it.
pub fn dbus_error(e: impl Into<zbus::Error>) -> anyhow::Error {
    let e = e.into();
    match &e {
        zbus::Error::MethodError(_, Some(detail), _) => anyhow!("{detail}"),
        zbus::Error::FDO(fdo) => match fdo.as_ref() {
            zbus::fdo::Error::ZBus(inner) => dbus_error(inner.clone()),
            other => anyhow!("{}", zbus::DBusError::description(other).unwrap_or("D-Bus call failed")),
        },
        _ => anyhow!(e),
    }
}

/// What systemd knows of a unit name ([`Systemd::origins`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitOrigin {
    /// The name asked about.
    pub asked: String,
    /// The unit systemd has under that name (another one for an alias).
    pub id: String,
    /// `loaded`, `not-found`, `masked`, `error`, `bad-setting`, …
    pub load_state: String,
    pub active_state: String,
    /// The unit file it was loaded from (for an instance, its template's); empty for built-in
    /// and file-less units.
    pub fragment_path: String,
}

impl UnitOrigin {
    /// Does systemd have this unit at all: a file, a built-in or an alias, or something running
    /// under the name? (A name nobody defined loads as `not-found` and stays inactive.)
    pub fn is_known(&self) -> bool {
        self.load_state != "not-found" || !matches!(self.active_state.as_str(), "inactive" | "")
    }
}

/// What a unit looks like to systemd now (properties of org.freedesktop.systemd1.Unit and,
/// for services, .Service). Timestamps are µs since the epoch, 0 when it never happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitInfo {
    pub name: String,
    /// `loaded`, `not-found`, `masked`, `error`, …
    pub load_state: String,
    /// `active`, `inactive`, `failed`, `activating`, `deactivating`, `reloading`.
    pub active_state: String,
    /// Type-specific: `running`, `exited`, `dead`, `auto-restart`, …
    pub sub_state: String,
    pub active_enter_usec: u64,
    pub state_change_usec: u64,
    /// When the unit last left `inactive`; 0 if it was never started since systemd booted.
    pub inactive_exit_usec: u64,
    /// Services only.
    pub main_pid: u32,
    /// Services only: automatic restarts (`NRestarts`).
    pub restarts: u32,
    /// Services only: the last `STATUS=` the service sent (sd_notify).
    pub status_text: String,
    /// Services only: `success` or why it last failed (`exit-code`, `signal`, `timeout`, …).
    pub result: String,
    /// Services only: `TimeoutStartSec=` and `TimeoutStopSec=` in µs (`u64::MAX`: infinity);
    /// 0 for other units, which have no timeouts of their own.
    pub timeout_start_usec: u64,
    pub timeout_stop_usec: u64,
    /// The current run's `InvocationID` in hex (what the run sees as `$INVOCATION_ID`); empty
    /// when the unit is not running.
    pub invocation_id: String,
}

impl UnitInfo {
    /// Running or on its way there: what `systemctl is-active` calls active, plus starting.
    pub fn is_up(&self) -> bool {
        matches!(self.active_state.as_str(), "active" | "activating" | "reloading" | "refreshing")
    }

    /// Stopped or failed: nothing runs.
    pub fn is_down(&self) -> bool {
        matches!(self.active_state.as_str(), "inactive" | "failed" | "")
    }

    /// Started at least once since systemd booted.
    pub fn ever_started(&self) -> bool {
        self.inactive_exit_usec != 0
    }

    /// Crashed and waiting to be restarted (`activating (auto-restart)`), or failed.
    pub fn is_failing(&self) -> bool {
        self.active_state == "failed" || self.sub_state == "auto-restart"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    Start,
    Stop,
    Restart,
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobKind::Start => "start",
            JobKind::Stop => "stop",
            JobKind::Restart => "restart",
        })
    }
}

/// A job systemd accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub unit: String,
    pub kind: JobKind,
    pub path: OwnedObjectPath,
}

/// How a job ended (the `result` of `JobRemoved`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    /// It did what was asked.
    Done,
    /// Nothing to do for the unit's state (e.g. a reload of a stopped unit).
    Skipped,
    /// Replaced or cancelled by another job.
    Canceled,
    Timeout,
    /// The unit failed (for a start: its process exited non-zero, or never became ready).
    Failed,
    /// A unit it requires failed.
    Dependency,
    /// A result this version does not know.
    Other(String),
}

impl JobResult {
    pub fn parse(s: &str) -> Self {
        match s {
            "done" => JobResult::Done,
            "skipped" => JobResult::Skipped,
            "canceled" => JobResult::Canceled,
            "timeout" => JobResult::Timeout,
            "failed" => JobResult::Failed,
            "dependency" => JobResult::Dependency,
            other => JobResult::Other(other.to_string()),
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, JobResult::Done | JobResult::Skipped)
    }
}

impl fmt::Display for JobResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobResult::Done => "done",
            JobResult::Skipped => "skipped",
            JobResult::Canceled => "canceled",
            JobResult::Timeout => "timed out",
            JobResult::Failed => "failed",
            JobResult::Dependency => "a dependency failed",
            JobResult::Other(s) => s,
        })
    }
}
