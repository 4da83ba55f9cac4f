//! Format checks for the values an operator writes: names, paths, ports, volumes, users.
//!
//! Each returns `Err(message)` with a sentence that says what is allowed; the caller attaches the
//! span. Names that become parts of unit names are strict; free text is escaped at render time.

/// The unit types a dependency may name directly.
pub const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".target",
    ".socket",
    ".mount",
    ".automount",
    ".path",
    ".timer",
    ".device",
    ".swap",
    ".slice",
    ".scope",
];

/// Is this dependency entry a plain systemd unit name (rather than a kapell service)?
pub fn looks_like_unit(entry: &str) -> bool {
    UNIT_SUFFIXES.iter().any(|s| entry.ends_with(s))
}

/// A systemd unit name (`network-online.target`, `getty@tty1.service`).
pub fn check_unit_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 255
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c));
    if ok { Ok(()) } else { Err(format!("invalid unit name {name:?}")) }
}

/// An absolute path that kapell's supervisor reads itself (a container's `env_files`, carried
/// as a quoted word): anything absolute that a unit file line can hold.
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must be absolute"));
    }
    if path.chars().any(char::is_control) {
        return Err(format!("path {path:?} contains a control character, which no unit file line can carry"));
    }
    Ok(())
}

/// An absolute path for a systemd setting that takes the rest of its line as one path
/// (`WorkingDirectory=`, `EnvironmentFile=`, `LoadCredential=ID:PATH`). Those settings do not
/// unquote, so blanks, quotes and backslashes inside the path are written as they are (and `%`
/// doubled by the renderer); refused is only what systemd cannot read back as the same path.
pub fn check_systemd_path(path: &str) -> Result<(), String> {
    check_path(path)?;
    if path.ends_with(char::is_whitespace) {
        return Err(format!("path {path:?} ends with a blank, which systemd strips from the end of a line"));
    }
    if path.ends_with('\\') {
        return Err(format!("path {path:?} ends with a backslash, which systemd reads as a line continuation"));
    }
    // systemd refuses paths that are not normalized (`path_is_normalized()`).
    let parts: Vec<&str> = path[1..].split('/').collect();
    let last = parts.len() - 1; // a trailing '/' is fine
    if parts.iter().enumerate().any(|(i, c)| *c == "." || *c == ".." || (c.is_empty() && i < last)) {
        return Err(format!(
            "path {path:?} has a `.`, `..` or empty component; systemd takes only normalized paths here"
        ));
    }
    if path.split('/').any(|c| c.len() > 255) || path.len() >= 4096 {
        return Err(format!("path {path:?} is longer than systemd takes (4095 bytes, 255 per component)"));
    }
    Ok(())
}

/// The longest environment variable name kapell takes.
const MAX_ENV_NAME_BYTES: usize = 4096;

/// `exec[0]` of a native service, as systemd takes an executable (`config_parse_exec`): an
/// absolute, normalized path of a file, with no quote, backslash or control character in it.
/// systemd refuses anything else and the unit does not load.
pub fn check_executable(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("`exec[0]` must be an absolute path, not {path:?}"));
    }
    if let Some(c) = path.chars().find(|&c| matches!(c, '"' | '\'' | '\\' | '\x7f') || u32::from(c) < 0x20) {
        return Err(format!("`exec[0]` has {c:?} in it, which systemd refuses in an executable's path: {path:?}"));
    }
    if path.ends_with('/') {
        return Err(format!("`exec[0]` names a directory: {path:?}"));
    }
    check_systemd_path(path).map_err(|e| format!("`exec[0]`: {e}"))
}

/// An environment variable name for a native service: systemd's `Environment=` takes letters,
/// digits and '_' (not first a digit) and ignores any other assignment with only a log line.
pub fn check_env_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_ENV_NAME_BYTES {
        return check_container_env_name(name);
    }
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        return Ok(());
    }
    if check_container_env_name(name).is_err() {
        return check_container_env_name(name);
    }
    Err(format!(
        "invalid environment variable name {name:?} for a native service: systemd takes only letters, digits and '_' \
         (not first a digit) in Environment= and ignores other names (a container service, with `image`, may use it)"
    ))
}

/// An environment variable name for a container: the value goes to Docker, not to systemd, and
/// Docker takes any name without '=' (Java and Spring images read dotted names such as
/// `spring.profiles.active`).
pub fn check_container_env_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_ENV_NAME_BYTES {
        return Err(format!(
            "an environment variable name of {} bytes: kapell takes at most {MAX_ENV_NAME_BYTES} (it shares a unit \
             file line with its value)",
            name.len()
        ));
    }
    if name.is_empty() || name.contains('=') || name.chars().any(char::is_control) {
        return Err(format!(
            "invalid environment variable name {name:?}: a name must be non-empty, without '=' or control characters"
        ));
    }
    Ok(())
}

/// `user` or `user:group`, by name or number.
pub fn check_user(spec: &str) -> Result<(), String> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 32
            && (p.chars().all(|c| c.is_ascii_digit())
                || (p.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                    && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')))
    };
    let ok = match spec.split_once(':') {
        Some((u, g)) => part_ok(u) && part_ok(g),
        None => part_ok(spec),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid user {spec:?}: use a user name or uid, optionally followed by ':' and a group name or gid"
        ))
    }
}

/// A credential (secret) name: it becomes a file name under `$CREDENTIALS_DIRECTORY`.
pub fn check_secret_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok { Ok(()) } else { Err(format!("invalid secret name {name:?}: use letters, digits, '_', '.' or '-'")) }
}

/// A host name in `placement.hosts` (the names of `fleet.toml`'s `[hosts.*]`). At most 63
/// characters: discovery names the host `<name>.host.kapell`, and a DNS label is no longer.
pub fn check_host_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok { Ok(()) } else { Err(format!("invalid host name {name:?}")) }
}

/// A Docker image reference; Docker checks the details, kapell only refuses what could never be one.
pub fn check_image(image: &str) -> Result<(), String> {
    if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("invalid image reference {image:?}"));
    }
    Ok(())
}

/// `bridge`, `host`, `none` or a Docker network name.
pub fn check_network(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok { Ok(()) } else { Err(format!("invalid network name {name:?}")) }
}

/// `[IP:][HOST:]CONTAINER[/PROTO]`, as `docker run -p` takes it (IPv6 in brackets): read by the
/// one reader the supervisor builds its request with, so what this accepts is what it sends.
pub fn check_port(spec: &str) -> Result<(), String> {
    crate::ports::parse(spec).map(|_| ())
}

/// The path (and query) of an HTTP health check: what goes into the request line after GET.
pub fn check_http_path(path: &str) -> Result<(), String> {
    let valid = path.starts_with('/') && path.parse::<http::uri::PathAndQuery>().is_ok();
    if valid && !path.contains('#') && path.chars().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!(
            "invalid `path` {path:?}: an HTTP path starts with '/' and has no blanks, control or non-ASCII \
             characters (percent-encode them)"
        ))
    }
}

/// `SOURCE:TARGET[:OPTIONS]` where SOURCE is an absolute host path or a named volume.
pub fn check_volume(spec: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid volume {spec:?}: {why}"));
    let parts: Vec<&str> = spec.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return bad("expected SOURCE:TARGET[:OPTIONS]");
    }
    let (source, target) = (parts[0], parts[1]);
    if source.starts_with('/') {
        if source.chars().any(|c| c.is_control()) {
            return bad("control characters in the source path");
        }
    } else if check_network(source).is_err() {
        return bad("the source must be an absolute path or a volume name");
    }
    if !target.starts_with('/') || target.chars().any(|c| c.is_control()) {
        return bad("the target must be an absolute path in the container");
    }
    if let Some(options) = parts.get(2) {
        const KNOWN: &[&str] = &["ro", "rw", "z", "Z", "nocopy"];
        if let Some(o) = options.split(',').find(|o| !KNOWN.contains(o) && !PROPAGATIONS.contains(o)) {
            return bad(&format!("unknown option {o:?}"));
        }
        // Docker refuses these when it creates the container, long after the file was checked.
        let bind = source.starts_with('/');
        if bind && options.split(',').any(|o| o == "nocopy") {
            return bad("`nocopy` is for named volumes; Docker refuses it on a host path");
        }
        if let Some(o) = options.split(',').find(|o| !bind && PROPAGATIONS.contains(o)) {
            return bad(&format!("`{o}` is a host path's mount propagation; Docker refuses it on a named volume"));
        }
    }
    Ok(())
}

/// The mount propagations of a bind mount (`docker run -v /src:/dst:rshared`).
pub const PROPAGATIONS: &[&str] = &["shared", "rshared", "slave", "rslave", "private", "rprivate"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_paths_take_what_systemd_reads_back() {
        for ok in ["/srv/my app", "/etc/kapell/100% \"q\" it's.env", "/a/b/", "/"] {
            assert!(check_systemd_path(ok).is_ok(), "{ok}");
        }
        for bad in ["srv", "/a\nb", "/a ", "/a\\", "/a/../b", "/a/./b", "/a//b", &format!("/{}", "x".repeat(256))] {
            assert!(check_systemd_path(bad).is_err(), "{bad}");
        }
        assert!(check_path("/a//b c ").is_ok(), "the supervisor reads any absolute path");
    }

    #[test]
    fn environment_names_for_systemd_and_for_docker() {
        assert!(check_env_name("JAVA_OPTS").is_ok());
        let native = check_env_name("spring.profiles.active").expect_err("systemd ignores it");
        assert!(native.contains("native service") && native.contains("container"), "{native}");
        assert!(check_container_env_name("spring.profiles.active").is_ok());
        for bad in ["", "A=B", "a\nb"] {
            assert!(check_container_env_name(bad).is_err(), "{bad:?}");
            assert!(check_env_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ports() {
        for ok in [
            "80",
            "8080:80",
            "127.0.0.1:8125:8125/udp",
            "[::1]:80:80",
            "1000-1010:1000-1010",
            "127.0.0.1::80",
            "8000-8001:80",
        ] {
            assert!(check_port(ok).is_ok(), "{ok}");
        }
        for bad in ["", "0", "99999:80", "a:b", "80/icmp", "1:2:3:4"] {
            assert!(check_port(bad).is_err(), "{bad}");
        }
        // The supervisor could not send these: `kapell check` says so, not the container's start.
        assert_eq!(
            check_port("8000-8002:80-81").expect_err("lengths"),
            "invalid port mapping \"8000-8002:80-81\": the host and container ranges differ in length"
        );
        assert!(check_port("90-80").is_err(), "a range that runs backwards");
    }

    #[test]
    fn volumes() {
        for ok in ["/srv/pg:/data", "pgdata:/backup:ro", "/a:/b:ro,z", "pgdata:/b:nocopy,ro", "/a:/b:ro,rshared"] {
            assert!(check_volume(ok).is_ok(), "{ok}");
        }
        for bad in ["/a", "rel/path:/b", "/a:rel", "/a:/b:bogus"] {
            assert!(check_volume(bad).is_err(), "{bad}");
        }
        // What Docker refuses at create time (checked against dockerd 20.10: "field
        // VolumeOptions/BindOptions must not be specified") is refused here, with the reason.
        assert_eq!(
            check_volume("/srv/a:/a:ro,nocopy").expect_err("bind"),
            "invalid volume \"/srv/a:/a:ro,nocopy\": `nocopy` is for named volumes; Docker refuses it on a host path"
        );
        assert_eq!(
            check_volume("data:/a:rslave").expect_err("volume"),
            "invalid volume \"data:/a:rslave\": `rslave` is a host path's mount propagation; Docker refuses it on a named volume"
        );
    }

    #[test]
    fn users() {
        for ok in ["999:999", "todo", "postgres:postgres", "_x"] {
            assert!(check_user(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a:", "Root", "x:y:z"] {
            assert!(check_user(bad).is_err(), "{bad}");
        }
    }
}
