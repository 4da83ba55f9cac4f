//! A Compose healthcheck that only asks a local URL (curl, wget) or a local port (`nc -z`) becomes
//! a kapell `http` or `tcp` check, probed from the host: the image then needs no curl, wget or nc.
//! Anything else (other programs, shell operators, remote hosts, https) stays a `cmd`.

/// A check kapell probes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HostCheck {
    /// `http = port`, `path`, and `expect` when it is not the default (curl without `--fail`
    /// passes on any answer).
    Http {
        port: u16,
        path: String,
        expect: Option<&'static str>,
    },
    Tcp {
        port: u16,
    },
}

/// The host check a healthcheck test (`CMD` argv, or a `CMD-SHELL` line as `sh -c LINE`) means,
/// if it is one.
pub(super) fn host_check(cmd: &[String]) -> Option<HostCheck> {
    let words = match cmd {
        [sh, c, line] if (sh == "/bin/sh" || sh == "sh") && c == "-c" => shell_words(line)?,
        _ => cmd.to_vec(),
    };
    let (program, args) = words.split_first()?;
    match program.rsplit('/').next()? {
        "curl" => curl(args),
        "wget" => wget(args),
        "nc" | "netcat" => nc(args),
        _ => None,
    }
}

/// The words of a shell line with no shell syntax but an optional `|| exit 1` at the end.
fn shell_words(line: &str) -> Option<Vec<String>> {
    let line = line.trim();
    let line = ["|| exit 1", "||exit 1", "|| false"].iter().find_map(|t| line.strip_suffix(t)).unwrap_or(line);
    if line.contains(|c: char| ";&|<>`$(){}\n".contains(c)) {
        return None;
    }
    shell_words::split(line).ok()
}

fn curl(args: &[String]) -> Option<HostCheck> {
    let mut url = None;
    let mut fail = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-f" | "--fail" | "-fs" | "-sf" | "-fsS" | "-sSf" | "-sfS" | "-fSs" => fail = true,
            "-s" | "-S" | "-sS" | "--silent" | "--show-error" => {}
            "-o" | "--output" => {
                it.next()?;
            }
            a if a.starts_with('-') => return None,
            a if url.is_none() => url = Some(a),
            _ => return None,
        }
    }
    let (port, path) = local_url(url?)?;
    Some(HostCheck::Http { port, path, expect: (!fail).then_some("100-599") })
}

fn wget(args: &[String]) -> Option<HostCheck> {
    let mut url = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-q" | "--quiet" | "--spider" | "-qO-" | "-qO" | "--no-verbose" | "-nv" => {}
            "-O" | "-T" | "-t" => {
                it.next()?;
            }
            a if a.starts_with("-O") || a.starts_with("--timeout=") || a.starts_with("--tries=") => {}
            a if a.starts_with("--output-document=") => {}
            a if a.starts_with('-') => return None,
            a if url.is_none() => url = Some(a),
            _ => return None,
        }
    }
    let (port, path) = local_url(url?)?;
    Some(HostCheck::Http { port, path, expect: None })
}

fn nc(args: &[String]) -> Option<HostCheck> {
    let mut zero_io = false;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-z" | "-zv" | "-vz" => zero_io = true,
            "-v" => {}
            "-w" => {
                it.next()?;
            }
            a if a.starts_with('-') => return None,
            a => rest.push(a),
        }
    }
    match rest.as_slice() {
        [host, port] if zero_io && is_local(host) => {
            Some(HostCheck::Tcp { port: port.parse().ok().filter(|p| *p > 0)? })
        }
        _ => None,
    }
}

/// `http://<local host>[:port][/path]` as port and path.
fn local_url(url: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => (h, p.parse::<u16>().ok().filter(|p| *p > 0)?),
        _ => (authority, 80),
    };
    let valid_path = crate::config::syntax::check_http_path(&path).is_ok();
    (is_local(host) && valid_path).then_some((port, path))
}

fn is_local(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1" | "0.0.0.0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    fn shell(line: &str) -> Vec<String> {
        words(&["/bin/sh", "-c", line])
    }

    #[test]
    fn local_http_and_tcp_become_host_checks() {
        let http = |port, path: &str, expect| Some(HostCheck::Http { port, path: path.into(), expect });
        assert_eq!(host_check(&words(&["curl", "-f", "http://localhost:8080/health"])), http(8080, "/health", None));
        assert_eq!(host_check(&shell("curl -fsS http://127.0.0.1/ || exit 1")), http(80, "/", None));
        assert_eq!(host_check(&words(&["curl", "http://localhost:3000"])), http(3000, "/", Some("100-599")));
        assert_eq!(
            host_check(&shell("wget -q --spider http://localhost:9000/ready?x=1")),
            http(9000, "/ready?x=1", None)
        );
        assert_eq!(host_check(&words(&["wget", "-qO-", "http://0.0.0.0:81/"])), http(81, "/", None));
        assert_eq!(host_check(&shell("nc -z localhost 5432")), Some(HostCheck::Tcp { port: 5432 }));
        assert_eq!(
            host_check(&words(&["nc", "-zv", "-w", "2", "127.0.0.1", "6379"])),
            Some(HostCheck::Tcp { port: 6379 })
        );
    }

    #[test]
    fn everything_else_stays_a_command() {
        for cmd in [
            words(&["pg_isready", "-U", "postgres"]),
            shell("curl -f http://localhost/ && touch /tmp/ok"),
            shell("curl -f http://$HOST/"),
            words(&["curl", "-f", "https://localhost/"]),
            words(&["curl", "-f", "http://db:5432/"]),
            words(&["curl", "-fL", "http://localhost/"]),
            words(&["curl", "-f", "http://localhost/a", "http://localhost/b"]),
            words(&["nc", "localhost", "80"]),
            words(&["wget", "-q", "http://example.org/"]),
        ] {
            assert_eq!(host_check(&cmd), None, "{cmd:?}");
        }
    }
}
