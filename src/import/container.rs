//! What a container sees: environment, environment files, ports, volumes and networks.

use super::Note;
use super::draft::{Context, Svc, info, lost};
use crate::config::syntax;
use compose_spec::service::network_config::{NetworkConfig, NetworkMode};
use compose_spec::service::ports::{self, Port, ShortPort};
use compose_spec::service::volumes::mount::Mount;
use compose_spec::service::volumes::{ShortOptions, ShortVolume, Source};
use compose_spec::{Compose, ListOrMap, Resource, ShortOrLong};
use std::path::{Path, PathBuf};

/// Resolves a host path as Compose does: `~` is the home directory, a relative path is relative
/// to the project directory.
pub(super) fn host_path(ctx: &Context<'_>, path: &Path) -> PathBuf {
    let home = (ctx.lookup)("HOME").unwrap_or_else(|| "/root".into());
    let path = match path.strip_prefix("~") {
        Ok(rest) => Path::new(&home).join(rest),
        Err(_) => ctx.dir.join(path),
    };
    // Lexical normalisation: `./a/../b` → `b`, like Compose's filepath.Clean.
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The project's networks: which are Compose's own (they become the stack network) and which are
/// external (used by name).
pub(super) struct Networks {
    /// Compose network name → the Docker network name, for external networks.
    external: Vec<(String, String)>,
}

impl Networks {
    pub(super) fn new(ctx: &Context<'_>, compose: &Compose, notes: &mut Vec<Note>) -> Networks {
        let mut external = Vec::new();
        let mut own = 0;
        let mut default_used = false;
        for service in compose.services.values() {
            match &service.network_config {
                None => default_used = true,
                Some(NetworkConfig::Networks(n)) => {
                    let names: Vec<String> = match n {
                        ShortOrLong::Short(s) => s.iter().map(ToString::to_string).collect(),
                        ShortOrLong::Long(l) => l.keys().map(ToString::to_string).collect(),
                    };
                    default_used |= names.is_empty() || names.iter().any(|n| n == "default");
                }
                Some(NetworkConfig::NetworkMode(_)) => {}
            }
        }
        for (name, network) in &compose.networks {
            let place = format!("networks.{name}");
            match network {
                Some(Resource::External { name: real }) => {
                    external.push((name.to_string(), real.clone().unwrap_or_else(|| name.to_string())));
                }
                Some(Resource::Compose(n)) => {
                    if name.as_str() != "default" {
                        own += 1;
                    }
                    let custom = n.driver.is_some()
                        || !n.driver_opts.is_empty()
                        || n.ipam.is_some()
                        || n.internal
                        || n.attachable
                        || n.enable_ipv6
                        || !n.labels.is_empty()
                        || n.name.is_some();
                    if custom {
                        lost(
                            notes,
                            place,
                            format!(
                                "its settings (driver, IPAM, internal, IPv6, labels, name) are not carried over: services on it use the stack network kapell-{}",
                                ctx.stack
                            ),
                        );
                    }
                }
                None => {
                    if name.as_str() != "default" {
                        own += 1;
                    }
                }
            }
        }
        let default_external = external.iter().any(|(n, _)| n == "default");
        if default_used && !default_external {
            own += 1;
        }
        if own > 1 {
            let mut list: Vec<String> = compose
                .networks
                .iter()
                .filter(|(_, n)| !matches!(n, Some(Resource::External { .. })))
                .map(|(name, _)| name.to_string())
                .collect();
            if default_used && !default_external && !list.iter().any(|n| n == "default") {
                list.insert(0, "default".into());
            }
            lost(
                notes,
                "networks",
                format!(
                    "the project's networks ({}) all become the stack network kapell-{}, so services that Compose kept apart can reach each other",
                    list.join(", "),
                    ctx.stack
                ),
            );
        }
        Networks { external }
    }
}

pub(super) fn map_environment(ctx: &Context<'_>, env: ListOrMap, svc: &mut Svc, notes: &mut Vec<Note>, place: &str) {
    let entries: Vec<(String, Option<String>)> = match env {
        ListOrMap::List(list) => list
            .into_iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (e, None),
            })
            .collect(),
        ListOrMap::Map(map) => map.into_iter().map(|(k, v)| (k.to_string(), v.map(|v| v.to_string()))).collect(),
    };
    // A name given twice keeps its last value, at the place of its last mention (Compose's
    // list form allows repeats); found with one pass, not a search per name.
    let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, (key, _)) in entries.iter().enumerate() {
        last.insert(key, i);
    }
    let keep: Vec<bool> = entries.iter().enumerate().map(|(i, (key, _))| last.get(key.as_str()) == Some(&i)).collect();
    for ((key, value), keep) in entries.into_iter().zip(keep) {
        if !keep {
            continue;
        }
        // Every imported service is a container: Docker takes dotted names (`spring.profiles.active`).
        if let Err(e) = syntax::check_container_env_name(&key) {
            lost(notes, format!("{place}.{key}"), format!("not carried over: {e}"));
            continue;
        }
        // A variable without a value is taken from the environment Compose runs in.
        let value = match value {
            Some(v) => v,
            None => match (ctx.lookup)(&key) {
                Some(v) => {
                    info(
                        notes,
                        format!("{place}.{key}"),
                        "has no value in the file; the value of the import's environment is written into the stack",
                    );
                    v
                }
                None => {
                    info(
                        notes,
                        format!("{place}.{key}"),
                        "has no value and is not set in the environment; it stays unset, as with Compose",
                    );
                    continue;
                }
            },
        };
        svc.env.push((key, value));
    }
}

pub(super) fn map_env_files(
    ctx: &Context<'_>,
    env_file: Option<compose_spec::service::EnvFile>,
    svc: &mut Svc,
    notes: &mut Vec<Note>,
    place: &str,
) {
    let Some(env_file) = env_file else { return };
    for entry in env_file.into_list() {
        let (path, required) = match entry {
            ShortOrLong::Short(p) => (p, true),
            ShortOrLong::Long(c) => (c.path, c.required),
        };
        let path = host_path(ctx, &path);
        let text = path.display().to_string();
        if let Err(e) = syntax::check_path(&text) {
            lost(notes, place, format!("{text} is not carried over: {e}"));
            continue;
        }
        if !required {
            if path.exists() {
                lost(notes, place, format!("{text} is optional in Compose; kapell requires it (it exists now)"));
            } else {
                info(notes, place, format!("{text} is optional and does not exist; it is left out"));
                continue;
            }
        }
        // Read by the supervisor as the common subset of systemd's and Compose's formats: a
        // file that uses more of Compose's would give the container other values.
        match crate::supervisor::env_file::read_text(&path) {
            // Not there yet: it may be put in place on the host that runs the stack.
            Err(_) if !path.exists() => {}
            Ok(content) => {
                if let Some(why) = crate::supervisor::env_file::beyond_the_common_subset(&content) {
                    lost(
                        notes,
                        place,
                        format!(
                            "{text}: {why}; kapell reads env files as the part of Compose's format that systemd shares (kapell.toml(5), env_files): rewrite that line"
                        ),
                    );
                }
            }
            // The supervisor refuses it too, when the container starts.
            Err(why) => lost(notes, place, format!("{text}: {why}; the service will not start with it")),
        }
        svc.env_files.push(text);
    }
}

fn port_text(
    host_ip: Option<std::net::IpAddr>,
    host: Option<String>,
    container: String,
    protocol: Option<&str>,
) -> String {
    let mut out = String::new();
    match host_ip {
        Some(std::net::IpAddr::V6(ip)) => out.push_str(&format!("[{ip}]:")),
        Some(ip) => out.push_str(&format!("{ip}:")),
        None => {}
    }
    match (host, host_ip.is_some()) {
        (Some(h), _) => out.push_str(&format!("{h}:")),
        (None, true) => out.push(':'),
        (None, false) => {}
    }
    out.push_str(&container);
    if let Some(p) = protocol.filter(|p| *p != "tcp") {
        out.push('/');
        out.push_str(p);
    }
    out
}

pub(super) fn map_ports(ports: ports::Ports, svc: &mut Svc, notes: &mut Vec<Note>, place: &str) {
    for port in ports::into_short_iter(ports) {
        let text = match port {
            Ok(ShortPort { host_ip, ranges, protocol }) => port_text(
                host_ip,
                ranges.host().map(|h| h.to_string()),
                ranges.container().to_string(),
                protocol.as_ref().map(AsRef::as_ref),
            ),
            Err(Port { name, target, published, host_ip, protocol, app_protocol, mode, .. }) => {
                if name.is_some() || app_protocol.is_some() {
                    info(
                        notes,
                        place,
                        format!("port {target}: `name` and `app_protocol` are descriptions only; left out"),
                    );
                }
                if mode.as_ref().is_some_and(|m| m.as_ref() == "ingress") {
                    info(
                        notes,
                        place,
                        format!("port {target}: `mode: ingress` is for Swarm; the port is published on this host"),
                    );
                }
                port_text(
                    host_ip,
                    published.map(|p| p.to_string()),
                    target.to_string(),
                    protocol.as_ref().map(AsRef::as_ref),
                )
            }
        };
        match syntax::check_port(&text) {
            Ok(()) => svc.ports.push(text),
            Err(e) => lost(notes, place, format!("not carried over: {e}")),
        }
    }
}

/// The Docker volume behind a Compose volume name: its `name`, or `<project>_<volume>`.
fn volume_name(ctx: &Context<'_>, compose: &Compose, volume: &str) -> Result<String, String> {
    match compose.volumes.iter().find(|(k, _)| k.as_str() == volume).map(|(_, v)| v) {
        None => Err(format!("`{volume}` is not declared in the top-level `volumes`")),
        Some(Some(Resource::External { name })) => Ok(name.clone().unwrap_or_else(|| volume.to_string())),
        Some(Some(Resource::Compose(v))) => Ok(v.name.clone().unwrap_or_else(|| format!("{}_{volume}", ctx.project))),
        Some(None) => Ok(format!("{}_{volume}", ctx.project)),
    }
}

pub(super) fn map_volumes(
    ctx: &Context<'_>,
    compose: &Compose,
    volumes: compose_spec::service::Volumes,
    svc: &mut Svc,
    notes: &mut Vec<Note>,
    place: &str,
) {
    for (index, volume) in volumes.into_iter().enumerate() {
        let (short, long_options) = match volume {
            ShortOrLong::Short(s) => (s, Vec::new()),
            ShortOrLong::Long(mount) => match long_volume(mount, notes, place) {
                Some(s) => s,
                None => continue,
            },
        };
        let target = short.container_path.as_path().display().to_string();
        let mut options = Vec::new();
        let set_aside = ctx.volume_options.get(&(svc.compose_name.clone(), target.clone()));
        let (source, comment) = match short.options {
            None => {
                let name = format!("{}-{}-{}", ctx.stack, svc.name, index + 1);
                lost(
                    notes,
                    place,
                    format!(
                        "{target}: an anonymous volume becomes the named volume `{name}` (kapell needs a name); data in the old anonymous volume is not reused"
                    ),
                );
                (name, Some("was an anonymous volume in Compose".to_string()))
            }
            Some(ShortOptions { source, read_only, selinux }) => {
                if read_only {
                    options.push("ro");
                }
                match selinux {
                    Some(compose_spec::service::volumes::SELinux::Shared) => options.push("z"),
                    Some(compose_spec::service::volumes::SELinux::Private) => options.push("Z"),
                    None => {}
                }
                match source {
                    Source::HostPath(p) => (host_path(ctx, p.as_path()).display().to_string(), None),
                    Source::Volume(v) => match volume_name(ctx, compose, v.as_str()) {
                        Ok(docker) => {
                            let comment = format!("Compose volume `{v}`: same Docker volume, same data");
                            (docker, Some(comment))
                        }
                        Err(e) => {
                            lost(notes, place, format!("{target}: not carried over: {e}"));
                            continue;
                        }
                    },
                }
            }
        };
        // kapell's form is `source:target[:options]`: a ':' inside a path would change what is
        // mounted where (`/data:ro` would be a read-only `/data`).
        if source.contains(':') || target.contains(':') {
            lost(
                notes,
                place,
                format!(
                    "{source}:{target}: not carried over: a ':' in a mount's path cannot be written in a volume entry"
                ),
            );
            continue;
        }
        // A short-form option that Docker refuses on this kind of mount is left out.
        let bind = source.starts_with('/');
        for option in set_aside.into_iter().flatten().map(String::as_str) {
            if bind && option == "nocopy" {
                info(
                    notes,
                    place,
                    format!("{target}: `nocopy` is for named volumes, and Docker refuses it on a host path; left out"),
                );
            } else if !bind && syntax::PROPAGATIONS.contains(&option) {
                info(
                    notes,
                    place,
                    format!(
                        "{target}: `{option}` is a host path's mount propagation, and Docker refuses it on a named volume; left out"
                    ),
                );
            } else {
                options.push(option);
            }
        }
        options.extend(long_options);
        let mut text = format!("{source}:{target}");
        if !options.is_empty() {
            text.push(':');
            text.push_str(&options.join(","));
        }
        match syntax::check_volume(&text) {
            Ok(()) => svc.volumes.push((text, comment)),
            Err(e) => lost(notes, place, format!("not carried over: {e}")),
        }
    }
}

/// A long-form mount as the short form kapell writes, with the options compose_spec's short form
/// has no field for (`nocopy`, a bind propagation), reporting what the short form cannot say.
fn long_volume(mount: Mount, notes: &mut Vec<Note>, place: &str) -> Option<(ShortVolume, Vec<&'static str>)> {
    let target = mount.common().target.as_path().display().to_string();
    if mount.common().consistency.is_some() {
        info(notes, place, format!("{target}: `consistency` has no effect on Linux; left out"));
    }
    match mount {
        Mount::Volume(v) => {
            let mut extra = Vec::new();
            if let Some(opts) = &v.volume {
                if opts.nocopy {
                    extra.push("nocopy");
                }
                if opts.subpath.is_some() {
                    lost(notes, place, format!("{target}: `subpath` is not carried over: the whole volume is mounted"));
                }
            }
            let options = v.source.map(|source| ShortOptions {
                source: Source::Volume(source),
                read_only: v.common.read_only,
                selinux: None,
            });
            Some((ShortVolume { container_path: v.common.target, options }, extra))
        }
        Mount::Bind(b) => {
            let mut selinux = None;
            let mut extra = Vec::new();
            if let Some(opts) = &b.bind {
                match opts.propagation {
                    // `docker run -v` has no word for it, and kapell's volumes are that form.
                    Some(compose_spec::service::volumes::mount::BindPropagation::Unbindable) => {
                        lost(notes, place, format!("{target}: bind `propagation: unbindable` is not carried over"));
                    }
                    Some(propagation) => extra.push(propagation.as_str()),
                    None => {}
                }
                if opts.create_host_path {
                    info(
                        notes,
                        place,
                        format!("{target}: Docker creates a missing host path for kapell's bind mounts"),
                    );
                }
                selinux = opts.selinux;
            }
            let options = ShortOptions { source: Source::HostPath(b.source), read_only: b.common.read_only, selinux };
            Some((ShortVolume { container_path: b.common.target, options: Some(options) }, extra))
        }
        Mount::Tmpfs(_) => {
            lost(notes, place, format!("{target}: tmpfs mounts are not carried over; kapell has no tmpfs setting"));
            None
        }
        Mount::NamedPipe(_) | Mount::Cluster(_) => {
            lost(notes, place, format!("{target}: npipe and cluster mounts are not carried over"));
            None
        }
    }
}

pub(super) fn map_network(
    ctx: &Context<'_>,
    networks: &Networks,
    config: Option<NetworkConfig>,
    svc: &mut Svc,
    notes: &mut Vec<Note>,
    place: &str,
) {
    let stack_network = format!("kapell-{}", ctx.stack);
    let names: Vec<(String, bool)> = match config {
        // On the project's default network: the stack network, unless `networks.default` is external.
        None => vec![("default".to_string(), false)],
        Some(NetworkConfig::NetworkMode(mode)) => {
            let place = place.replace(".networks", ".network_mode");
            match mode {
                NetworkMode::Host => svc.network = Some(("host".into(), "the host's network".into())),
                NetworkMode::None => svc.network = Some(("none".into(), "no network".into())),
                NetworkMode::Other(bridge) if bridge == "bridge" => {
                    svc.network = Some(("bridge".into(), "Docker's default bridge".into()));
                }
                NetworkMode::Other(other) if syntax::check_network(&other).is_ok() => {
                    svc.network = Some((other, "an existing Docker network".into()));
                }
                other => lost(
                    notes,
                    place,
                    format!(
                        "`{other}` is not carried over: kapell attaches a container to a network, not to another container; the service uses {stack_network}"
                    ),
                ),
            }
            return;
        }
        Some(NetworkConfig::Networks(ShortOrLong::Short(set))) => set.iter().map(|n| (n.to_string(), false)).collect(),
        Some(NetworkConfig::Networks(ShortOrLong::Long(map))) => {
            map.iter().map(|(n, opts)| (n.to_string(), opts.as_ref().is_some_and(|o| !o.is_empty()))).collect()
        }
    };
    for (name, _) in names.iter().filter(|(_, options)| *options) {
        lost(
            notes,
            format!("{place}.{name}"),
            format!(
                "aliases, fixed addresses and other per-network options are not carried over; other containers reach this one as `{}` or `{}.{}`",
                svc.name, svc.name, ctx.stack
            ),
        );
    }
    let external: Vec<&(String, String)> =
        networks.external.iter().filter(|(n, _)| names.iter().any(|(m, _)| m == n)).collect();
    match (external.as_slice(), names.len()) {
        ([(compose, docker)], 1) => {
            svc.network = Some((docker.clone(), format!("the external network `{compose}`")));
        }
        ([], _) => {}
        _ => lost(
            notes,
            place,
            format!(
                "a kapell container joins one network; of {} it joins the stack network {stack_network}",
                names.len()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 200,000 variables (a repeated name keeps its last value, in the place of its last
    /// mention): one pass, where a search per variable took minutes.
    #[test]
    fn a_large_environment_is_mapped_in_one_pass() {
        let lookup = |_: &str| None;
        let none = super::super::docker_forms::VolumeOptions::new();
        let ctx =
            Context { project: "p", stack: "p", dir: Path::new("/srv/p"), lookup: &lookup, volume_options: &none };
        let mut list: Vec<String> = (0..200_000).map(|i| format!("V{i}=x{i}")).collect();
        list.push("V0=last".into());
        let env: ListOrMap = serde_yaml::from_value(serde_yaml::Value::from(list)).expect("a list");
        let mut svc = Svc::default();
        map_environment(&ctx, env, &mut svc, &mut Vec::new(), "services.web.environment");
        assert_eq!(svc.env.len(), 200_000);
        assert_eq!(svc.env[0], ("V1".to_string(), "x1".to_string()));
        assert_eq!(svc.env[199_999], ("V0".to_string(), "last".to_string()));
    }
}
