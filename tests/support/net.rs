//! Private bridges with their own `10.231.N.0/24`.
//!
//! N is allocated with one lock file per subnet (`STATE_DIR/nets/N.lock`), held for the life of
//! the bridge, so tests running in parallel threads and in other test binaries never share a
//! subnet. The bridge is named after N (`kapellN`): when a lock is free but its bridge exists,
//! the process that made it died without cleaning up, and the next allocation deletes it.
//! Subnet 0 is left to `sandbox.sh`.

use std::fs::{File, OpenOptions, TryLockError};
use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::cmd::{run, run_ok};
use super::state_dir;

/// A bridge with gateway `10.231.N.1/24`; hosts take `address(2..=254)`. Dropping it deletes the
/// bridge (drop the hosts and dockerds attached to it first: declare the `Net` before them).
pub struct Net {
    n: u8,
    name: String,
    _lock: File,
}

impl Net {
    /// Allocates a free subnet and creates its bridge (up, gateway address assigned).
    pub fn new() -> Result<Net> {
        super::require_root()?;
        let (n, lock) = allocate()?;
        let net = Net { n, name: format!("kapell{n}"), _lock: lock };
        let gateway = format!("{}/24", net.gateway());
        for args in [
            vec!["link", "add", &net.name, "type", "bridge", "forward_delay", "0"],
            vec!["addr", "add", &gateway, "dev", &net.name],
            vec!["link", "set", &net.name, "up"],
        ] {
            run_ok(Command::new("ip").args(&args)).with_context(|| format!("cannot set up bridge {}", net.name))?;
        }
        Ok(net)
    }

    /// The bridge's interface name (at most 15 bytes).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `10.231.N.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.231.{}.0/24", self.n)
    }

    pub fn prefix_len(&self) -> u8 {
        24
    }

    /// `10.231.N.1`, the bridge's own address on the machine.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.n, 1)
    }

    /// `10.232.N.0/24`: address space for the user-defined networks of a dockerd on this bridge
    /// (its default address pool), so they are the rig's own addresses too and never collide with
    /// another test's.
    pub fn docker_pool(&self) -> String {
        format!("10.232.{}.0/24", self.n)
    }

    /// `10.231.N.i`, an address for a host. Panics unless `2 <= i <= 254` (.1 is the gateway).
    pub fn address(&self, i: u8) -> Ipv4Addr {
        assert!((2..=254).contains(&i), "host address index {i} not in 2..=254");
        Ipv4Addr::new(10, 231, self.n, i)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Err(e) = delete_link(&self.name) {
            eprintln!("kapell-test: cannot delete bridge {}: {e:#}", self.name);
        }
    }
}

/// Deletes interface `name` if it exists.
pub fn delete_link(name: &str) -> Result<()> {
    if link_exists(name)? {
        run_ok(Command::new("ip").args(["link", "del", name]))?;
    }
    Ok(())
}

fn link_exists(name: &str) -> Result<bool> {
    let out = run(Command::new("ip").args(["-o", "link", "show", "dev", name]))?;
    Ok(out.status.success())
}

/// Picks a subnet nobody holds, starting at a PID-dependent spot so parallel processes rarely
/// contend for the same lock first.
fn allocate() -> Result<(u8, File)> {
    let dir = state_dir().join("nets");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    reap_bridges()?;
    let start = std::process::id() % 254;
    for k in 0..254u32 {
        let n = u8::try_from((start + k) % 254 + 1).expect("1..=254 fits u8");
        if let Some(lock) = try_lock(n)?
            && !subnet_in_use(n)?
        {
            return Ok((n, lock));
        }
    }
    bail!("no free subnet in 10.231.1-254.0/24")
}

/// The lock on subnet `n`, if nobody else holds it.
fn try_lock(n: u8) -> Result<Option<File>> {
    let path = state_dir().join("nets").join(format!("{n}.lock"));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// Deletes `kapellN` bridges whose subnet lock is free: their owner died without cleaning up.
fn reap_bridges() -> Result<()> {
    let out = run_ok(Command::new("ip").args(["-o", "link", "show", "type", "bridge"]))?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "7: kapell12: <BROADCAST,…" (a name may carry an "@…" suffix).
        let Some(name) = line.split(": ").nth(1).and_then(|f| f.split('@').next()) else {
            continue;
        };
        let Some(n) = name.strip_prefix("kapell").and_then(|n| n.parse::<u8>().ok()) else {
            continue;
        };
        if try_lock(n)?.is_some() {
            eprintln!("kapell-test: deleting leftover bridge {name}");
            delete_link(name)?;
        }
    }
    Ok(())
}

/// Whether something not made by this rig uses `10.231.n.0/24` (an address on any link) or the
/// name `kapellN`.
fn subnet_in_use(n: u8) -> Result<bool> {
    let out = run_ok(Command::new("ip").args(["-4", "-o", "addr", "show"]))?;
    let needle = format!(" 10.231.{n}.");
    Ok(String::from_utf8_lossy(&out.stdout).contains(&needle) || link_exists(&format!("kapell{n}"))?)
}
