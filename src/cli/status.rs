//! `kapell status [STACK…] [--json]`: every service's unit and what systemd says about it.

use super::exit;
use crate::apply;
use crate::blocking::block_on;
use crate::diagnostics::did_you_mean;
use crate::host_units;
use crate::printable::printable;
use crate::status::{self, Row};
use crate::systemd::Systemd;
use crate::unitset::UnitSet;
use crate::validate::UnitSearchPath;
use anyhow::{Context, Result};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Show every service: its unit, state, health, since when, and restart count.
///
/// One line per unit (each instance of a replicated service), for the services of the stack
/// files and those still installed from an earlier apply. ACTIVE and SUB are systemd's states;
/// HEALTH is the service's health check (starting, healthy, unhealthy; "-" without a check);
/// SINCE is how long the unit has been in its state; RESTARTS counts
/// systemd's automatic restarts. With --json, each unit's last probe (when, how long, the result:
/// an HTTP status, a connection, an exit status or the error) and each running container's
/// address on each of its networks (asked from Docker) are shown too. While
/// `kapell dns` runs, each service's `<service>.<stack>.kapell` name is listed with the addresses
/// it answers now (in the JSON, as `name` and `answers` of each unit).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stacks to show (default: all).
    #[arg(value_name = "STACK")]
    pub stacks: Vec<String>,

    /// Print a JSON array, one object per unit, instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(config_dir: &Path, args: Args) -> Result<u8> {
    let checked = crate::host::load(config_dir, &[], &UnitSearchPath::from_env())
        .with_context(|| format!("cannot read the stacks in {}", config_dir.display()))?;
    if !checked.is_ok() {
        eprintln!("warning: some stacks have errors (`kapell check` lists them); they are shown as installed");
    }
    let desired = apply::desired(config_dir, &checked);
    let claims = host_units::StackClaims::of(config_dir, &checked);
    let local = desired.merged(&apply::installed(&desired, &claims)?);
    // What a fleet controller installed here (`kapell receive`), minus what local stacks shadow.
    let is_local = |path: &str| local.stacks.values().any(|s| s.files.contains_key(path));
    let fleet =
        UnitSet::from_rendered(&host_units::fleet_share_by(is_local, &claims, host_units::current_received()?).files);
    let units = local.merged(&fleet);
    let selection: Option<BTreeSet<String>> = (!args.stacks.is_empty()).then(|| args.stacks.iter().cloned().collect());
    for name in &args.stacks {
        if !units.stacks.contains_key(name) {
            let hint = did_you_mean(name, units.stacks.keys().map(String::as_str))
                .map(|n| format!(" (did you mean {n}?)"))
                .unwrap_or_default();
            eprintln!("error: there is no stack {}{hint}", printable(name));
            return Ok(exit::USAGE);
        }
    }
    let rows = block_on(async {
        let systemd = Systemd::system().await?;
        status::collect(&systemd, &units, selection.as_ref(), status::Depth::Full).await
    })??;
    let addresses = if args.json && rows.iter().any(|r| r.container && r.info.active_state == "active") {
        match block_on(crate::supervisor::container_addresses())? {
            Ok(a) => a,
            Err(e) => {
                eprintln!("warning: container addresses are not shown: {e:#}");
                HashMap::new()
            }
        }
    } else {
        HashMap::new()
    };
    let now = crate::clock::now_usec();
    let dns = crate::dns_state::read();
    if args.json {
        let json: Vec<_> = rows
            .iter()
            .map(|r| {
                let mut row = row_json(r, origin(&fleet, r), addresses.get(&r.info.name));
                add_names(&mut row, r, dns.as_ref());
                row
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else if rows.is_empty() {
        eprintln!("no stacks in {} and none installed", config_dir.display());
    } else {
        print_table(&rows, now, &fleet);
        if let Some(dns) = &dns {
            print_names(dns, selection.as_ref());
        }
    }
    if let Some(dns) = &dns
        && dns.resolved == Some(false)
    {
        eprintln!("{}", no_resolved_hint(dns));
    }
    Ok(exit::OK)
}

/// `fleet` for a unit a fleet controller installed, `local` for one of this host's stacks.
fn origin(fleet: &UnitSet, row: &Row) -> &'static str {
    let from_fleet = fleet.stacks.get(&row.stack).is_some_and(|s| s.running().any(|(_, u)| u == row.info.name));
    if from_fleet { "fleet" } else { "local" }
}

/// `addresses`: the container's `(network, address)` pairs, if it runs.
fn row_json(row: &Row, origin: &str, addresses: Option<&Vec<(String, String)>>) -> serde_json::Value {
    let since = row.since_usec();
    let addresses: Option<serde_json::Map<String, serde_json::Value>> =
        addresses.map(|a| a.iter().map(|(net, ip)| (net.clone(), ip.as_str().into())).collect());
    serde_json::json!({
        "stack": row.stack,
        "origin": origin,
        "service": row.service,
        "unit": row.info.name,
        "kind": if row.container { "container" } else { "native" },
        "load": row.info.load_state,
        "active": row.info.active_state,
        "sub": row.info.sub_state,
        "health": row.health().map(|h| h.as_str()),
        "check": row.probe.as_ref().map(|p| &p.check),
        "last_probe": row.probe.as_ref().and_then(|p| p.last_probe.as_ref()).map(|p| serde_json::json!({
            "at": status::format_timestamp(p.at_usec),
            "at_usec": p.at_usec,
            "duration_usec": p.duration_usec,
            "passed": p.passed,
            "result": p.outcome,
        })),
        "status": (!row.info.status_text.is_empty()).then_some(&row.info.status_text),
        "since": (since != 0).then(|| status::format_timestamp(since)),
        "since_usec": since,
        "restarts": row.info.restarts,
        "main_pid": (row.info.main_pid != 0).then_some(row.info.main_pid),
        "addresses": addresses,
    })
}

/// `name` and `answers` of a unit's service, when the responder knows the name.
fn add_names(row: &mut serde_json::Value, unit: &Row, dns: Option<&crate::dns_state::DnsState>) {
    let name = format!("{}.{}.{}", unit.service, unit.stack, crate::discovery::catalog::DOMAIN);
    if let (Some(answers), Some(object)) = (dns.and_then(|d| d.names.get(&name)), row.as_object_mut()) {
        object.insert("answers".into(), serde_json::json!(answers));
        object.insert("name".into(), name.into());
    }
}

/// NAME · ANSWERS, for the names of the stacks shown.
fn print_names(dns: &crate::dns_state::DnsState, selection: Option<&BTreeSet<String>>) {
    let mut lines = vec![vec!["NAME".to_string(), "ANSWERS".to_string()]];
    for (name, answers) in &dns.names {
        let stack = name.split('.').nth(1).unwrap_or_default();
        if selection.is_some_and(|s| !s.contains(stack)) {
            continue;
        }
        let text: Vec<String> = answers.iter().map(|a| format!("{} ({})", a.ip, a.host)).collect();
        lines.push(vec![name.clone(), if text.is_empty() { "-".into() } else { text.join(", ") }]);
    }
    if lines.len() > 1 {
        println!();
        super::table::print(&lines);
    }
}

/// What to do on a host whose processes cannot resolve the names.
pub(super) fn no_resolved_hint(dns: &crate::dns_state::DnsState) -> String {
    let (dnsmasq, unbound) = dns.loopback_server();
    if crate::discovery::resolved::present() {
        return "note: kapell dns could not route .kapell through this host's systemd-resolved (`journalctl -u \
             kapell-dns` says why), so its own processes cannot resolve the names; its containers can"
            .to_string();
    }
    format!(
        "note: this host runs no systemd-resolved, so its own processes cannot resolve .kapell names (its containers \
         can): forward the domain `kapell` to {dnsmasq} in its resolver (dnsmasq: `server=/kapell/{dnsmasq}`; unbound: \
         a forward-zone \"kapell.\" with forward-addr {unbound}, and domain-insecure: \"kapell.\" if it validates \
         DNSSEC, as .kapell names are not signed), or install systemd-resolved and restart kapell-dns"
    )
}

fn print_table(rows: &[Row], now: u64, fleet: &UnitSet) {
    let header = ["STACK", "SERVICE", "UNIT", "ACTIVE", "SUB", "HEALTH", "SINCE", "RESTARTS"].map(String::from);
    let mut lines = vec![header.to_vec()];
    for row in rows {
        let since = row.since_usec();
        // A unit without a file shows its load state (`not-found`: not applied yet, or deleted).
        let active =
            if row.info.load_state == "loaded" { row.info.active_state.clone() } else { row.info.load_state.clone() };
        // Units a fleet controller installed are marked, so nobody looks for them in /etc/kapell.
        let stack = match origin(fleet, row) {
            "fleet" => format!("{} (fleet)", row.stack),
            _ => row.stack.clone(),
        };
        lines.push(
            [
                stack,
                row.service.clone(),
                row.info.name.clone(),
                active,
                row.info.sub_state.clone(),
                row.health().map_or("-", |h| h.as_str()).to_string(),
                if since == 0 { "-".to_string() } else { status::format_age(now, since) },
                row.info.restarts.to_string(),
            ]
            .to_vec(),
        );
    }
    super::table::print(&lines);
}
