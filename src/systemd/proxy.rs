//! The parts of `org.freedesktop.systemd1` that kapell calls (see org.freedesktop.systemd1(5)).
//! Only what is used is declared; property values are read with `GetAll` (see [`super::UnitInfo`]).

use zbus::Variant;
use zbus::names::InterfaceName;
use zbus::{ObjectPath, OwnedObjectPath, proxy};

/// The well-known name of the service manager on the system bus.
pub const DESTINATION: &str = "org.freedesktop.systemd1";

/// The unit interface (`ActiveState`, timestamps, …), common to every unit type.
pub const UNIT_INTERFACE: InterfaceName<'static> =
    InterfaceName::from_static_str_unchecked("org.freedesktop.systemd1.Unit");

/// The service interface (`MainPID`, `NRestarts`, `StatusText`, …).
pub const SERVICE_INTERFACE: InterfaceName<'static> =
    InterfaceName::from_static_str_unchecked("org.freedesktop.systemd1.Service");

/// One row of `ListUnits*`: name, description, load state, active state, sub state, following,
/// unit object path, queued job id, job type, job object path.
pub type UnitListEntry =
    (String, String, String, String, String, String, OwnedObjectPath, u32, String, OwnedObjectPath);

/// One row of `ListJobs`: id, unit, job type, job state, job object path, unit object path.
pub type JobListEntry = (u32, String, String, String, OwnedObjectPath, OwnedObjectPath);

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    /// `systemctl daemon-reload`: reruns the generators and reloads every unit file. The reply
    /// comes once the reload is complete.
    fn reload(&self) -> zbus::Result<()>;

    /// Enqueues a start job; returns the job's object path.
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// Enqueues a stop job.
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// Enqueues a restart job (starts the unit if it is not running).
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// Sends `signal` to the unit's processes; `whom` is `main`, `control` or `all`.
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
    /// Creates and starts a transient unit (what `systemd-run` does): `properties` of the unit
    /// itself, `aux` units created with it (the service a transient timer activates). Returns
    /// the start job's object path.
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Variant<'_>)],
        aux: &[(&str, Vec<(&str, Variant<'_>)>)],
    ) -> zbus::Result<OwnedObjectPath>;

    /// The object of a loaded unit; `NoSuchUnit` if it is not loaded.
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// `systemctl enable`: the `[Install]` links of the unit files; whether they carry install
    /// information, and the changes made (type, link, target).
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<(String, String, String)>)>;

    /// The object of a unit, loading it from disk if needed (a missing file gives a unit whose
    /// `LoadState` is `not-found`).
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// The units with these names, loading them if needed, in the order given.
    fn list_units_by_names(&self, names: &[&str]) -> zbus::Result<Vec<UnitListEntry>>;

    /// Loaded units whose active state is one of `states` (all if empty) and whose name
    /// matches one of the glob `patterns` (all if empty).
    fn list_units_by_patterns(&self, states: &[&str], patterns: &[&str]) -> zbus::Result<Vec<UnitListEntry>>;

    /// The jobs systemd has queued or running: id, unit, job type, job state, job object path,
    /// unit object path. A job that is not listed has finished.
    fn list_jobs(&self) -> zbus::Result<Vec<JobListEntry>>;

    /// A job finished: its id, object path, unit and result (`done`, `canceled`, `timeout`,
    /// `failed`, `dependency`, `skipped`).
    #[zbus(signal)]
    fn job_removed(&self, id: u32, job: ObjectPath<'_>, unit: &str, result: &str) -> zbus::Result<()>;

    /// The manager's environment block (`systemctl show-environment`), which generators inherit.
    #[zbus(property(emits_changed_signal = "false"))]
    fn environment(&self) -> zbus::Result<Vec<String>>;
}
