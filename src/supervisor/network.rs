//! The stack networks a container needs (`kapell-<stack>`), created when missing.
//!
//! Every supervisor of a stack ensures the same network, and systemd starts them in parallel, so
//! two may find it missing at the same instant. Docker does not settle that: two concurrent
//! creates of one name can both succeed (seen with Docker 28), leaving two networks that the name
//! no longer picks out, and containers of one stack split between them. So the supervisors of a
//! host take turns:
//! look up and create happen under a lock file per network in kapell's runtime directory (held for a few
//! milliseconds). Should Docker still hold several networks of the name (made by something else,
//! or by a supervisor on another host sharing the engine), every supervisor picks the same one
//! (the oldest, then the lowest id), removes its own extra copy, and names the network by id.
//!
//! kapell never removes a stack network: containers of several services (and of dependent
//! stacks) share it, and it costs nothing while unused.

use super::docker::{Engine, NetworkRef};
use super::label;
use crate::logging::id;
use anyhow::{Result, bail};
use std::collections::HashMap;
use std::fs::File;

/// Labels of a stack network: it is kapell's, and whose.
pub fn labels(stack_of_network: &str) -> HashMap<String, String> {
    HashMap::from([
        (label::STACK.to_string(), stack_of_network.to_string()),
        (label::NETWORK.to_string(), "stack".into()),
    ])
}

/// Makes sure stack network `name` (of stack `owner`) exists; returns how to name it to Docker:
/// its name, or the id of the agreed one while Docker holds several of that name.
pub async fn ensure(unit: &str, docker: &Engine, name: &str, owner: &str) -> Result<String> {
    let _turn = take_turn(unit, name).await;
    let mut found = docker.networks_named(name).await?;
    let mut created = None;
    if found.is_empty() {
        created = docker.create_network(name, labels(owner)).await?;
        if let Some(id) = &created {
            log::info!(
                message_id = id::NETWORK_CREATED, kapell_network = name;
                "{unit}: created network {name} ({})", short(id)
            );
        }
        found = docker.networks_named(name).await?;
    }
    let Some(winner) = agreed(&found) else {
        bail!("network {name} disappeared while it was being created");
    };
    if found.len() == 1 {
        return Ok(name.to_string());
    }
    if let Some(mine) = created.filter(|id| *id != winner.id) {
        log::info!("{unit}: network {name} was created twice at the same moment; removing our copy {}", short(&mine));
        docker.remove_network(&mine).await?;
    }
    Ok(winner.id.clone())
}

/// Waits for this host's other supervisors to finish looking up or creating network `name`; the
/// turn lasts as long as the returned file is open. The lock files are in kapell's runtime
/// directory ([`crate::lock::runtime_dir`]). Without a lock (no runtime directory, e.g. not
/// root), it goes on without one and says so.
async fn take_turn(unit: &str, name: &str) -> Option<File> {
    let dir = crate::lock::runtime_dir();
    let path = dir.join(format!("network-{name}.lock"));
    let shown = path.display().to_string();
    let locked = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
        std::fs::create_dir_all(&dir)?;
        let file = File::options().create(true).truncate(false).write(true).open(&path)?;
        file.lock()?;
        Ok(file)
    })
    .await;
    match locked {
        Ok(Ok(file)) => Some(file),
        Ok(Err(e)) => {
            log::warn!("{unit}: cannot lock {shown} ({e}); creating network {name} without it");
            None
        }
        Err(e) => {
            log::warn!("{unit}: {e}; creating network {name} without a lock");
            None
        }
    }
}

/// The network every supervisor picks among several of one name: the oldest, then the lowest id.
fn agreed(found: &[NetworkRef]) -> Option<&NetworkRef> {
    found.iter().min_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)))
}

/// The stack that owns network `kapell-<stack>`.
pub fn owner(network: &str) -> &str {
    network.strip_prefix("kapell-").unwrap_or(network)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(id: &str, created: &str) -> NetworkRef {
        NetworkRef { id: id.into(), created: created.into() }
    }

    #[test]
    fn everyone_agrees_on_the_oldest_then_the_lowest_id() {
        let a = net("bbb", "2026-12-01T05:00:00.000000001Z");
        let b = net("aaa", "2026-12-01T05:00:00.000000002Z");
        let c = net("ccc", "2026-12-01T05:00:00.000000001Z");
        assert_eq!(agreed(&[a.clone(), b.clone(), c.clone()]), Some(&a));
        assert_eq!(agreed(&[c.clone(), b.clone(), a.clone()]), Some(&a));
        assert_eq!(agreed(std::slice::from_ref(&b)), Some(&b));
        assert_eq!(agreed(&[]), None);
    }

    #[test]
    fn owners() {
        assert_eq!(owner("kapell-todo"), "todo");
        assert_eq!(owner("kapell-my-app"), "my-app");
    }
}
