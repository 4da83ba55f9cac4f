//! `fleet.toml` (kapell-fleet.toml(5)): the hosts of a controller, how to reach them, and rollout defaults.
//! Read with the same spanned reader as the stacks, so every problem comes with file:line:col,
//! unknown keys are errors with a hint, and all problems of the file are reported at once.

use crate::config::document::{Spanned, Table, Value};
use crate::config::reader::{At, Ctx};
use crate::config::syntax;
use crate::diagnostics::{Diagnostic, Source};
use crate::quantity::Duration;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const ROOT_KEYS: &[&str] = &["defaults", "hosts", "rollout"];
const DEFAULTS_KEYS: &[&str] =
    &["ssh_user", "ssh_config", "known_hosts", "parallel", "reconcile_interval", "confirm_timeout"];
const HOST_KEYS: &[&str] = &["address", "ip", "labels"];
const ROLLOUT_KEYS: &[&str] =
    &["max_parallel", "min_healthy_time", "healthy_deadline", "auto_revert", "canary", "auto_promote"];

/// The checked contents of `fleet.toml`.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub source: Arc<Source>,
    pub defaults: Defaults,
    /// By name, sorted (reports list hosts in this order).
    pub hosts: BTreeMap<String, FleetHost>,
    pub rollout: Rollout,
}

#[derive(Debug, Clone)]
pub struct Defaults {
    /// `ssh -l`; `None`: ssh's own choice (the config's `User`, else the local user).
    pub ssh_user: Option<String>,
    /// `ssh -F`; `None`: the invoking user's `~/.ssh/config`.
    pub ssh_config: Option<PathBuf>,
    /// `UserKnownHostsFile`; `None`: ssh's own.
    pub known_hosts: Option<PathBuf>,
    /// Hosts worked on at once.
    pub parallel: usize,
    pub reconcile_interval: Duration,
    pub confirm_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct FleetHost {
    pub name: String,
    /// What ssh connects to: a host name, an IP address or an ssh alias (optionally `user@`).
    pub address: String,
    /// Where other hosts reach this host's services (discovery): `ip`, else `address` when it
    /// is an IP address.
    pub ip: Option<std::net::IpAddr>,
    pub labels: BTreeMap<String, String>,
    /// Where `[hosts.<name>]` was written.
    pub span: Range<usize>,
}

/// Rollout defaults (Nomad's `update` names).
#[derive(Debug, Clone)]
pub struct Rollout {
    pub max_parallel: usize,
    pub min_healthy_time: Duration,
    pub healthy_deadline: Duration,
    pub auto_revert: bool,
    /// Hosts that get a change first; the others wait until these are healthy and promoted.
    pub canary: usize,
    /// Promote the canaries once healthy for `min_healthy_time`; else `kapell fleet promote`.
    pub auto_promote: bool,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            max_parallel: 1,
            min_healthy_time: Duration::from_secs(10),
            healthy_deadline: Duration::from_secs(300),
            auto_revert: true,
            canary: 0,
            auto_promote: false,
        }
    }
}

/// Reads `path`; `Err` holds every problem found.
pub fn load(path: &Path) -> Result<Fleet, Vec<Diagnostic>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) => Err(vec![Diagnostic::new(&Source::new(path, ""), 0..0, format!("cannot read the file: {e}"))]),
    }
}

/// Parses the text of a `fleet.toml` found at `path`.
pub fn parse(path: &Path, text: &str) -> Result<Fleet, Vec<Diagnostic>> {
    let source = Source::new(path, text);
    let mut ctx = Ctx::new(Arc::clone(&source));
    let (root, syntax_errors) = crate::config::document::parse(&source.text);
    for e in &syntax_errors {
        let span = e.span.clone().unwrap_or(0..0);
        let message = match e.message.trim() {
            // The parser does not say which key; a host written twice is the likely mistake.
            "duplicate key" => {
                let key = source.text.get(span.clone()).unwrap_or_default();
                let line_start = source.text[..span.start.min(source.text.len())].rfind('\n').map_or(0, |i| i + 1);
                if source.text[line_start..].trim_start().starts_with("[hosts.") {
                    format!("host `{key}` is defined twice: each [hosts.<name>] table once")
                } else {
                    format!("duplicate key `{key}`")
                }
            }
            other => other.to_string(),
        };
        ctx.error(span, message);
    }
    if !ctx.diags.is_empty() {
        return Err(ctx.diags);
    }
    let root = &root;
    ctx.reject_unknown_keys(root, ROOT_KEYS, "fleet.toml");
    let defaults = match root.get("defaults").and_then(|v| ctx.table(v, "defaults")) {
        Some(table) => read_defaults(&mut ctx, table),
        None => read_defaults(&mut ctx, &Table::new()),
    };
    let mut hosts = BTreeMap::new();
    match root.get("hosts").map(|v| (v, ctx.table(v, "hosts"))) {
        Some((value, Some(table))) => {
            for (key, value) in table.iter() {
                let name = At { value: key.get_ref().to_string(), span: key.span() };
                // DNS names are case-insensitive: `Web1` and `web1` would be one `<host>.host.kapell`.
                let same = hosts.keys().find(|h: &&String| h.eq_ignore_ascii_case(&name.value)).cloned();
                if let Some(same) = same {
                    ctx.error(
                        name.span.clone(),
                        format!(
                            "host {:?} differs from host {same:?} only in case: give each host a name of its own",
                            name.value
                        ),
                    );
                    continue;
                }
                if let Some(host) = read_host(&mut ctx, name, value) {
                    hosts.insert(host.name.clone(), host);
                }
            }
            if table.is_empty() {
                ctx.error(value.span(), "the fleet has no hosts: add a [hosts.<name>] table");
            }
        }
        Some((_, None)) => {}
        None => ctx.error(0..0, "the fleet has no hosts: add a [hosts.<name>] table with an `address`"),
    }
    let rollout = match root.get("rollout").and_then(|v| ctx.table(v, "rollout")) {
        Some(table) => read_rollout(&mut ctx, table),
        None => Rollout::default(),
    };
    if ctx.has_errors() { Err(ctx.diags) } else { Ok(Fleet { source, defaults, hosts, rollout }) }
}

fn read_defaults(ctx: &mut Ctx, table: &Table<'_>) -> Defaults {
    ctx.reject_unknown_keys(table, DEFAULTS_KEYS, "[defaults]");
    let ssh_user = table.get("ssh_user").and_then(|v| ctx.string(v, "ssh_user")).and_then(|u| {
        // ssh takes it as `-l USER`: a leading dash would be an option.
        let ok = token(&u.value, USER_CHARS);
        if !ok {
            ctx.error(
                u.span,
                format!(
                    "invalid `ssh_user` {:?}: a user name has only letters, digits and `{USER_CHARS}`, not first `-`",
                    u.value
                ),
            );
        }
        ok.then_some(u.value)
    });
    let ssh_config = absolute_path(ctx, table, "ssh_config");
    let known_hosts = absolute_path(ctx, table, "known_hosts");
    let parallel = positive(ctx, table, "parallel").unwrap_or(16);
    let reconcile_interval = duration(ctx, table, "reconcile_interval").unwrap_or(Duration::from_secs(30));
    let confirm_timeout = duration(ctx, table, "confirm_timeout").unwrap_or(Duration::from_secs(30));
    Defaults { ssh_user, ssh_config, known_hosts, parallel, reconcile_interval, confirm_timeout }
}

fn read_host(ctx: &mut Ctx, name: At<String>, value: &Spanned<Value<'_>>) -> Option<FleetHost> {
    if let Err(e) = syntax::check_host_name(&name.value) {
        ctx.error(name.span.clone(), format!("{e} (host names use letters, digits, `_`, `.` and `-`)"));
        return None;
    }
    let context = format!("[hosts.{}]", name.value);
    let table = ctx.table(value, &context)?;
    ctx.reject_unknown_keys(table, HOST_KEYS, &context);
    let address = match table.get("address").and_then(|v| ctx.string(v, "address")) {
        // ssh takes the destination as an argument after `--`, and ssh_config's ProxyCommand
        // and LocalCommand expand it (`%h`) into a shell command: only what a host name, an IP
        // address or an ssh alias can be, so no quote, `$`, `;` or blank can reach a shell.
        Some(a) if !token(&a.value, ADDRESS_CHARS) => {
            ctx.error(
                a.span,
                format!(
                    "invalid `address` {:?}: give a host name, an IP address or an ssh alias (letters, digits and `{ADDRESS_CHARS}`, not first `-`)",
                    a.value
                ),
            );
            return None;
        }
        Some(a) => a.value,
        None if table.get("address").is_none() => {
            ctx.error(name.span.clone(), format!("{context} has no `address` (what ssh connects to)"));
            return None;
        }
        None => return None,
    };
    let ip = match table.get("ip").and_then(|v| ctx.string(v, "ip")) {
        Some(ip) => match ip.value.parse::<std::net::IpAddr>() {
            Ok(parsed) => Some(parsed),
            Err(_) => {
                ctx.error(ip.span, format!("invalid `ip` {:?}: give an IPv4 or IPv6 address", ip.value));
                None
            }
        },
        None => address.parse().ok(),
    };
    let mut labels = BTreeMap::new();
    for (k, v) in table.get("labels").and_then(|v| ctx.string_map(v, "labels")).unwrap_or_default() {
        for (what, text) in [("label name", &k), ("label value", &v)] {
            if !token(&text.value, LABEL_CHARS) {
                ctx.error(
                    text.span.clone(),
                    format!(
                        "invalid {what} {:?}: labels have only letters, digits and `{LABEL_CHARS}`, not first `-`",
                        text.value
                    ),
                );
            }
        }
        labels.insert(k.value, v.value);
    }
    Some(FleetHost { name: name.value, address, ip, labels, span: name.span })
}

/// Characters besides letters and digits in an `address`: host names, IPv4 and IPv6 addresses
/// (`[…]`, `%zone`), ssh aliases and `user@host`.
const ADDRESS_CHARS: &str = ".-_:@%[]";
/// In a user name (POSIX portable names).
const USER_CHARS: &str = ".-_";
/// In label names and values.
const LABEL_CHARS: &str = ".-_/:@+=";

/// Non-empty, ASCII letters and digits and `extra` only, not starting with `-` (an option).
fn token(text: &str, extra: &str) -> bool {
    !text.is_empty() && !text.starts_with('-') && text.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

fn read_rollout(ctx: &mut Ctx, table: &Table<'_>) -> Rollout {
    ctx.reject_unknown_keys(table, ROLLOUT_KEYS, "[rollout]");
    let default = Rollout::default();
    let rollout = Rollout {
        max_parallel: positive(ctx, table, "max_parallel").unwrap_or(default.max_parallel),
        min_healthy_time: duration(ctx, table, "min_healthy_time").unwrap_or(default.min_healthy_time),
        healthy_deadline: duration(ctx, table, "healthy_deadline").unwrap_or(default.healthy_deadline),
        auto_revert: table.get("auto_revert").and_then(|v| ctx.boolean(v, "auto_revert")).unwrap_or(true),
        canary: count(ctx, table, "canary").unwrap_or(default.canary),
        auto_promote: table.get("auto_promote").and_then(|v| ctx.boolean(v, "auto_promote")).unwrap_or(false),
    };
    // A batch must stay healthy for min_healthy_time before healthy_deadline: otherwise every
    // batch fails, however healthy its hosts are.
    if rollout.min_healthy_time.as_micros() >= rollout.healthy_deadline.as_micros() {
        let span = ["min_healthy_time", "healthy_deadline"].iter().find_map(|k| table.get(k)).map(|v| ctx.span(v));
        ctx.error(
            span.unwrap_or(0..0),
            format!(
                "`min_healthy_time` ({}) must be shorter than `healthy_deadline` ({}): a batch has to be healthy \
                 for min_healthy_time before its deadline",
                rollout.min_healthy_time, rollout.healthy_deadline
            ),
        );
    }
    rollout
}

fn absolute_path(ctx: &mut Ctx, table: &Table<'_>, key: &str) -> Option<PathBuf> {
    let value = table.get(key).and_then(|v| ctx.string(v, key))?;
    if !value.value.starts_with('/') {
        ctx.error(value.span, format!("`{key}` must be an absolute path, not {:?}", value.value));
        return None;
    }
    // ssh reads `known_hosts` as an ssh_config word (double-quoted by the transport, so blanks
    // are fine) and expands `%` tokens in it: a quote, a `%` or a control character cannot be
    // said. (`ssh_config` is an argument of its own, `-F PATH`.)
    let unsayable = |c: char| key == "known_hosts" && (c == '"' || c == '%') || c.is_control();
    if let Some(c) = value.value.chars().find(|c| unsayable(*c)) {
        ctx.error(
            value.span,
            format!(
                "`{key}` {:?} cannot be given to ssh: it contains {c:?}; move the file to a path without it",
                value.value
            ),
        );
        return None;
    }
    Some(PathBuf::from(value.value))
}

fn positive(ctx: &mut Ctx, table: &Table<'_>, key: &str) -> Option<usize> {
    let n = table.get(key).and_then(|v| ctx.integer(v, key))?;
    match usize::try_from(n.value) {
        Ok(v) if (1..=4096).contains(&v) => Some(v),
        _ => {
            ctx.error(n.span, format!("`{key}` must be between 1 and 4096 (hosts at once), not {}", n.value));
            None
        }
    }
}

/// A count that may be zero (`canary = 0`: no canaries).
fn count(ctx: &mut Ctx, table: &Table<'_>, key: &str) -> Option<usize> {
    let n = table.get(key).and_then(|v| ctx.integer(v, key))?;
    match usize::try_from(n.value) {
        Ok(v) if v <= 4096 => Some(v),
        _ => {
            ctx.error(n.span, format!("`{key}` must be between 0 and 4096, not {}", n.value));
            None
        }
    }
}

fn duration(ctx: &mut Ctx, table: &Table<'_>, key: &str) -> Option<Duration> {
    let text = table.get(key).and_then(|v| ctx.string(v, key))?;
    match Duration::parse(&text.value) {
        Ok(d) if d.as_micros() > 0 => Some(d),
        Ok(_) => {
            ctx.error(text.span, format!("`{key}` must be longer than zero"));
            None
        }
        Err(e) => {
            ctx.error(text.span, e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("/etc/kapell/fleet.toml"), text) {
            Ok(_) => Vec::new(),
            Err(diags) => diags.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn reads_the_spec_example() {
        let text = r#"
[defaults]
ssh_user = "root"
ssh_config = "/etc/kapell/ssh_config"
known_hosts = "/etc/kapell/known_hosts"
parallel = 16
reconcile_interval = "30s"
confirm_timeout = "30s"

[hosts.web1]
address = "10.0.0.11"
labels = { role = "web", dc = "west" }

[hosts.db1]
address = "db1.internal"
labels = { role = "db" }

[rollout]
max_parallel = 1
min_healthy_time = "10s"
healthy_deadline = "5m"
auto_revert = true
canary = 0
auto_promote = false
"#;
        let fleet = parse(Path::new("fleet.toml"), text).expect("valid");
        assert_eq!(fleet.hosts.keys().collect::<Vec<_>>(), ["db1", "web1"]);
        assert_eq!(fleet.hosts["web1"].labels["role"], "web");
        assert_eq!(fleet.defaults.parallel, 16);
        assert_eq!(fleet.rollout.healthy_deadline, Duration::from_secs(300));
        assert_eq!(fleet.defaults.ssh_user.as_deref(), Some("root"));
    }

    #[test]
    fn a_batch_must_be_able_to_be_healthy_before_its_deadline() {
        let hosts = "[hosts.a]\naddress = \"a\"\n";
        assert_eq!(
            errors(&format!("{hosts}[rollout]\nmin_healthy_time = \"5m\"\nhealthy_deadline = \"1m\"\n")),
            [
                "/etc/kapell/fleet.toml:4:20: `min_healthy_time` (5min) must be shorter than `healthy_deadline` (1min): a \
                 batch has to be healthy for min_healthy_time before its deadline"
            ]
        );
        // The default min_healthy_time (10s) against a deadline given alone: located at the deadline.
        let got = errors(&format!("{hosts}[rollout]\nhealthy_deadline = \"10s\"\n"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("/etc/kapell/fleet.toml:4:20: `min_healthy_time` (10s) must be shorter"), "{got:?}");
        assert!(
            errors(&format!("{hosts}[rollout]\nmin_healthy_time = \"1m\"\nhealthy_deadline = \"61s\"\n")).is_empty()
        );
    }

    #[test]
    fn every_problem_is_located_and_explained() {
        let text = "[defaults]\nparalel = 4\nssh_config = \"relative\"\n\n[hosts.a]\nadress = \"x\"\n\n\
                    [hosts.b]\naddress = \"-oProxyCommand=x\"\n\n[rollout]\nhealthy_deadline = \"5 parsecs\"\n";
        let got = errors(text);
        let want = [
            "/etc/kapell/fleet.toml:2:1: unknown key `paralel` in [defaults] (did you mean `parallel`?)",
            "/etc/kapell/fleet.toml:3:14: `ssh_config` must be an absolute path, not \"relative\"",
            "/etc/kapell/fleet.toml:6:1: unknown key `adress` in [hosts.a] (did you mean `address`?)",
            "/etc/kapell/fleet.toml:5:8: [hosts.a] has no `address` (what ssh connects to)",
            "/etc/kapell/fleet.toml:9:11: invalid `address` \"-oProxyCommand=x\": give a host name, an IP address or an ssh alias (letters, digits and `.-_:@%[]`, not first `-`)",
        ];
        for w in want {
            assert!(got.iter().any(|g| g == w), "missing {w:?} in {got:#?}");
        }
        assert!(got.iter().any(|g| g.starts_with("/etc/kapell/fleet.toml:12:20: invalid duration")), "{got:#?}");
    }

    /// Discovery names each host `<name>.host.kapell`: a name must be one DNS label (63
    /// characters at most) and its own, whatever the case.
    #[test]
    fn host_names_are_dns_labels_of_their_own() {
        let long = "h".repeat(64);
        let got = errors(&format!(
            "[hosts.{long}]\naddress = \"a\"\n\n[hosts.Web1]\naddress = \"b\"\n\n[hosts.web1]\naddress = \"c\"\n"
        ));
        assert!(
            got.iter().any(|g| g.starts_with(&format!("/etc/kapell/fleet.toml:1:8: invalid host name \"{long}\""))),
            "{got:#?}"
        );
        assert!(
            got.iter().any(|g| g == "/etc/kapell/fleet.toml:7:8: host \"web1\" differs from host \"Web1\" only in case: give each host a name of its own"),
            "{got:#?}"
        );
        assert!(errors(&format!("[hosts.{}]\naddress = \"a\"\n", "h".repeat(63))).is_empty());
    }

    #[test]
    fn ip_is_given_or_the_address_when_that_is_one() {
        let text = "[hosts.a]\naddress = \"10.0.0.1\"\n\n[hosts.b]\naddress = \"b.internal\"\nip = \"fd00::2\"\n\n\
                    [hosts.c]\naddress = \"c.internal\"\n";
        let fleet = parse(Path::new("fleet.toml"), text).expect("valid");
        assert_eq!(fleet.hosts["a"].ip, "10.0.0.1".parse().ok());
        assert_eq!(fleet.hosts["b"].ip, "fd00::2".parse().ok());
        assert_eq!(fleet.hosts["c"].ip, None);
        assert_eq!(
            errors("[hosts.a]\naddress = \"a.internal\"\nip = \"a.internal\"\n"),
            ["/etc/kapell/fleet.toml:3:6: invalid `ip` \"a.internal\": give an IPv4 or IPv6 address"]
        );
    }

    #[test]
    fn canaries_are_read_and_checked() {
        let fleet = parse(Path::new("f"), "[hosts.a]\naddress = \"a\"\n[rollout]\ncanary = 2\nauto_promote = true\n")
            .expect("valid");
        assert_eq!((fleet.rollout.canary, fleet.rollout.auto_promote), (2, true));
        let got = errors("[hosts.a]\naddress = \"a\"\n[rollout]\ncanary = -1\nauto_promote = \"yes\"\n");
        assert!(got.iter().any(|g| g.contains(":4:10: `canary` must be between 0 and 4096, not -1")), "{got:#?}");
        assert!(got.iter().any(|g| g.contains(":5:")), "{got:#?}");
    }

    #[test]
    fn ip_defaults_to_an_ip_address_and_known_hosts_may_have_blanks() {
        let text = "[defaults]\nknown_hosts = \"/etc/kapell/known hosts\"\n\n[hosts.a]\naddress = \"10.0.0.1\"\n\n\
                    [hosts.b]\naddress = \"root@b.internal\"\nip = \"fd00::2\"\n\n[hosts.c]\naddress = \"c\"\n";
        let fleet = parse(Path::new("fleet.toml"), text).expect("valid");
        assert_eq!(fleet.hosts["a"].ip, Some("10.0.0.1".parse().expect("ip")));
        assert_eq!(fleet.hosts["b"].ip, Some("fd00::2".parse().expect("ip")));
        assert_eq!(fleet.hosts["c"].ip, None);
        assert_eq!(fleet.defaults.known_hosts.as_deref(), Some(Path::new("/etc/kapell/known hosts")));
    }

    #[test]
    fn a_fleet_needs_hosts() {
        assert_eq!(errors("[defaults]\nparallel = 2\n").len(), 1);
        assert!(errors("[hosts]\n")[0].contains("no hosts"));
    }
}
