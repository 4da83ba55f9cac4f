//! A private Docker engine per test.
//!
//! Each `Dockerd` has its own data root, exec root, pidfile, socket, containerd namespace and
//! bridge, so tests never see each other's containers or names and never touch `docker0`, the
//! machine's `/var/run/docker.sock`, iptables or `ip_forward`.

use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::cmd::{self, log_to, poll, run, run_ok, terminate};
use super::lease::Lease;
use super::{CGROUP_PREFIX, Net, cgroup, fs, logs_dir, tail, unique_id};

/// The CLI that ships with `docker.io`; another one earlier in `PATH` may not match the engine.
const DOCKER_CLI: &str = "/usr/bin/docker";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(30);

/// A running `dockerd`. Dropping it removes its containers, stops it, and deletes its bridge,
/// cgroups and directories.
pub struct Dockerd {
    id: String,
    lease: Lease,
    log: PathBuf,
    child: Option<Child>,
    net: Net,
}

impl Dockerd {
    /// Starts a dockerd with its own bridge (a [`Net`]) and waits until `/_ping` answers.
    pub fn start() -> Result<Dockerd> {
        super::require_root()?;
        let id = unique_id();
        let lease = Lease::acquire("docker", &id, |id, dir| {
            if let Err(e) = teardown(id, dir) {
                eprintln!("kapell-test: cannot reap dockerd {id}: {e:#}");
            }
        })?;
        let log = logs_dir()?.join(format!("docker-{id}.log"));
        let mut dockerd = Dockerd { id, lease, log, child: None, net: Net::new()? };
        dockerd.spawn()?;
        dockerd.wait_ping()?;
        Ok(dockerd)
    }

    fn dir(&self) -> &Path {
        self.lease.dir()
    }

    /// The engine's API socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dir().join("docker.sock")
    }

    /// The value for `DOCKER_HOST` (`unix://…`).
    pub fn host_env(&self) -> String {
        format!("unix://{}", self.socket_path().display())
    }

    /// The bridge behind Docker's default `bridge` network.
    pub fn net(&self) -> &Net {
        &self.net
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The cgroups this engine and its containers live in.
    pub fn cgroups(&self) -> [String; 2] {
        let name = cgroup_name(&self.id);
        [name.clone(), format!("{name}-ct")]
    }

    /// `docker -H <our socket> args…`, ignoring the invoking user's docker config and context.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(DOCKER_CLI);
        cmd.env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", self.dir().join("cli"))
            .arg("-H")
            .arg(self.host_env())
            .args(args);
        cmd
    }

    /// Runs the docker CLI; the exit status is the caller's to judge.
    pub fn docker(&self, args: &[&str]) -> Result<Output> {
        run(&mut self.cli(args))
    }

    /// Runs the docker CLI, which must succeed; returns stdout.
    pub fn docker_ok(&self, args: &[&str]) -> Result<String> {
        let out = run_ok(&mut self.cli(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Builds image `tag` without a registry: `/bin/busybox` from busybox-static plus a link for
    /// every applet it has (sh, sleep, nc, httpd, …), a minimal passwd/group, `CMD ["/bin/sh"]`.
    pub fn import_busybox(&self, tag: &str) -> Result<()> {
        let rootfs = tempfile::tempdir_in(self.dir()).context("cannot create image rootfs")?;
        busybox_rootfs(rootfs.path())?;
        let mut tar = Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(rootfs.path())
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot run tar")?;
        let tar_out = tar.stdout.take().context("tar has no stdout")?;
        let mut import = self.cli(&["import", "-c", r#"CMD ["/bin/sh"]"#, "-", tag]);
        let out = import.stdin(tar_out).output();
        let tar_status = tar.wait().context("cannot wait for tar")?;
        let out = out.with_context(|| format!("cannot run `{}`", cmd::describe(&import)))?;
        anyhow::ensure!(tar_status.success(), "tar of the busybox rootfs failed: {tar_status}");
        anyhow::ensure!(out.status.success(), "docker import {tag} failed: {}", cmd::render(&out));
        Ok(())
    }

    fn spawn(&mut self) -> Result<()> {
        let dir = self.dir().to_owned();
        std::fs::write(dir.join("daemon.json"), "{}\n")?;
        let [daemon_cgroup, container_cgroup] = self.cgroups();
        let args = vec![
            // Never read /etc/docker/daemon.json: someone else's settings must not leak in.
            format!("--config-file={}", dir.join("daemon.json").display()),
            format!("--data-root={}", dir.join("data").display()),
            format!("--exec-root={}", dir.join("exec").display()),
            format!("--pidfile={}", dir.join("docker.pid").display()),
            format!("--host={}", self.host_env()),
            format!("--bridge={}", self.net.name()),
            format!("--cgroup-parent=/{container_cgroup}"),
            // Unique even if a system containerd is running and dockerd decides to share it.
            format!("--containerd-namespace=kt-{}", self.id),
            format!("--containerd-plugins-namespace=kt-{}-plugins", self.id),
            "--iptables=false".into(),
            "--ip-forward=false".into(),
            "--ip-masq=false".into(),
            "--userland-proxy=false".into(),
        ];
        let (stdout, stderr) = log_to(&self.log)?;
        let mut cmd = cgroup::spawn_in(&daemon_cgroup, "/usr/sbin/dockerd", &args)?;
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let child = cmd.spawn().with_context(|| format!("cannot start `{}`", cmd::describe(&cmd)))?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ping(&mut self) -> Result<()> {
        let started = Instant::now();
        let socket = self.socket_path();
        let mut exited = None;
        let ok = poll(START_TIMEOUT, || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                exited = Some(status);
                return true;
            }
            ping(&socket)
        });
        let why = match exited {
            Some(status) => format!("dockerd exited ({status})"),
            None if !ok => format!("no answer on {} after {START_TIMEOUT:?}", socket.display()),
            None => {
                eprintln!("kapell-test: dockerd {} ready in {:.2?}", self.id, started.elapsed());
                return Ok(());
            }
        };
        bail!("{why}; log {}:\n{}", self.log.display(), tail(&self.log, 30))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_some() && ping(&self.socket_path()) {
            let ids = self.docker_ok(&["ps", "-aq"]).unwrap_or_default();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                if let Err(e) = self.docker_ok(&args) {
                    eprintln!("kapell-test: cannot remove containers: {e:#}");
                }
            }
        }
        if let Some(mut child) = self.child.take()
            && !terminate(&mut child, STOP_GRACE)
        {
            eprintln!("kapell-test: dockerd {} ignored SIGTERM; killed", self.id);
        }
        if let Err(e) = teardown(&self.id, self.lease.dir()) {
            eprintln!("kapell-test: cleanup of dockerd {} failed: {e:#}", self.id);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
        // `net` (the bridge) drops after this, once nothing uses it.
    }
}

fn cgroup_name(id: &str) -> String {
    format!("{CGROUP_PREFIX}docker-{id}")
}

/// After dockerd stopped (or was orphaned): kill leftovers (containerd, shims, container
/// processes) by cgroup, remove the cgroups, unmount and delete the directories.
fn teardown(id: &str, dir: &Path) -> Result<()> {
    let name = cgroup_name(id);
    cgroup::destroy(&name)?;
    cgroup::destroy(&format!("{name}-ct"))?;
    fs::remove_tree(dir)
}

/// `GET /_ping` over the unix socket answers 200.
fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reply = String::new();
    stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .and_then(|()| stream.read_to_string(&mut reply))
        .is_ok()
        && reply.lines().next().is_some_and(|l| l.contains(" 200 "))
}

fn busybox_rootfs(root: &Path) -> Result<()> {
    let busybox = Path::new("/bin/busybox");
    let binary = std::fs::read(busybox).context("cannot read /bin/busybox (apt-get install busybox-static)")?;
    // A dynamically linked busybox (package `busybox`) would not run in an empty image.
    let head = &binary[..binary.len().min(4096)];
    anyhow::ensure!(
        !head.windows(8).any(|w| w == b"ld-linux"),
        "/bin/busybox is dynamically linked; install busybox-static"
    );
    for dir in ["bin", "etc", "root", "tmp", "var/www"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::write(root.join("bin/busybox"), &binary)?;
    std::fs::set_permissions(root.join("bin/busybox"), std::fs::Permissions::from_mode(0o755))?;
    let list = run_ok(Command::new(busybox).arg("--list"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
            symlink("busybox", root.join("bin").join(applet))
                .with_context(|| format!("cannot link applet {applet}"))?;
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}
