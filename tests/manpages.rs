//! Man pages and shell completions. The command page `man/kapell.8` and the completions in
//! `packaging/completions/` are generated from the clap definitions (`kapell::cli::Cli`), so an
//! option cannot be added, renamed or removed without them changing. This test regenerates them in
//! memory and fails if the checked-in files are stale. After changing the command line, re-bless
//! with
//!
//!     KAPELL_BLESS=1 cargo test --test manpages
//!
//! (which rewrites them and then fails, so that it never counts as a passing run), review the
//! diff, and run again without it. The other pages (`kapell-generator.8`, `kapell.toml.5`,
//! `kapell-fleet.toml.5`) are written by hand. Every page must pass `mandoc -T lint` and
//! `groff -ww` (what `man` and lintian run) without a single message.

mod bless;

use clap::{ArgAction, CommandFactory};
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};
use kapell::cli::{Cli, exit};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every generated file: path relative to the repository → content.
fn generated() -> BTreeMap<&'static str, String> {
    let mut files = BTreeMap::new();
    files.insert("man/kapell.8", kapell_page());
    for (shell, path) in [
        (Shell::Bash, "packaging/completions/kapell.bash"),
        (Shell::Zsh, "packaging/completions/_kapell"),
        (Shell::Fish, "packaging/completions/kapell.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut completion_command(), "kapell", &mut out);
        files.insert(path, String::from_utf8(out).expect("completions are UTF-8"));
    }
    files
}

/// The command line as completions offer it: without the hidden internal commands (`run`,
/// `prober`), which clap_complete would otherwise offer. clap cannot remove a subcommand, so
/// the root is rebuilt from the real one's settings, arguments and visible subcommands.
fn completion_command() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("kapell")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(full.is_propagate_version_set())
        .subcommand_required(full.is_subcommand_required_set());
    for arg in full.get_arguments() {
        cmd = cmd.arg(arg.clone());
    }
    for sub in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        cmd = cmd.subcommand(sub.clone());
    }
    cmd
}

/// kapell(8): clap_mangen renders the header, the synopsis, the description and every option
/// of every subcommand; the sections clap knows nothing about (exit status, environment, files)
/// follow, with the exit codes taken from `kapell::cli::exit`.
fn kapell_page() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let man = Man::new(cmd.clone()).title("KAPELL").section("8").date(release_date()).manual("System Manager's Manual");
    // The title keeps the roff crate's preamble (it defines the apostrophe string); later
    // sections drop their copy of it.
    let mut page = render(|w| man.render_title(w));
    page += &strip_preamble(&render(|w| man.render_name_section(w)));
    page += &strip_preamble(&render(|w| man.render_synopsis_section(w)));
    page += &strip_preamble(&render(|w| man.render_description_section(w)));
    page += &strip_preamble(&render(|w| man.render_options_section(w)));

    let (hidden, visible): (Vec<_>, Vec<_>) =
        cmd.get_subcommands().filter(|s| s.get_name() != "help").partition(|s| s.is_hide_set());
    page += ".SH COMMANDS\n";
    page += "Options of the command line above apply to every command.\n";
    for sub in visible {
        page += &command_entry(sub);
    }
    if !hidden.is_empty() {
        page += ".SH \"INTERNAL COMMANDS\"\n";
        page += "These commands are run by systemd, not by people; they are not listed by \\fB\\-\\-help\\fR.\n";
        for sub in hidden {
            page += &command_entry(sub);
        }
    }
    page += &tail_sections();
    tidy(&page)
}

/// Irons out two habits of clap_mangen's output that `mandoc -T lint` warns about: trailing
/// blanks, and the `.br`, empty line, `.br` it puts between an option's help and its list of
/// possible values (an empty line is a paragraph break, so the `.br`s are ignored): a `.sp` is
/// what it means.
fn tidy(page: &str) -> String {
    let trimmed: String = page.lines().map(|l| format!("{}\n", l.trim_end())).collect();
    trimmed.replace("\n.br\n\n.br\n", "\n.sp\n")
}

/// One command (and, recursively, its subcommands) as a `.SS` block: synopsis, description and
/// its own options. Global options and `--help`/`--version` are documented once, at the top.
fn command_entry(cmd: &clap::Command) -> String {
    let name = cmd.get_bin_name().unwrap_or_else(|| cmd.get_name()).to_string();
    let mut local = cmd.clone();
    for arg in cmd.get_arguments() {
        let common = arg.is_global_set()
            || matches!(
                arg.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            );
        if common {
            local = local.mut_arg(arg.get_id().clone(), |a| a.hide(true));
        }
    }
    let has_options = local.get_arguments().any(|a| !a.is_hide_set());
    let man = Man::new(local);
    let mut heading = Roff::new();
    heading.control("SS", [name.as_str()]);
    let mut out = strip_preamble(&heading.to_roff());
    out += &section_body(&render(|w| man.render_synopsis_section(w)));
    out += ".PP\n";
    out += &section_body(&render(|w| man.render_description_section(w)));
    if has_options {
        out += &section_body(&render(|w| man.render_options_section(w)));
    }
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        out += &command_entry(sub);
    }
    out
}

/// EXIT STATUS, ENVIRONMENT, FILES and SEE ALSO.
fn tail_sections() -> String {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    let codes: [(u8, &str); 7] = [
        (exit::OK, "Success."),
        (
            exit::INVALID,
            "A stack (or the fleet file) is invalid; nothing was changed for it. Every problem is printed as file:line:column: message.",
        ),
        (
            exit::USAGE,
            "The request is wrong: an unknown option or a missing argument, a stack or service that does not exist, or a request that was refused (see kapell apply). Nothing was changed.",
        ),
        (
            exit::FAILED,
            "The operation failed: a file could not be read or written, systemd (D-Bus), Docker or SSH failed, or a unit did not start. The error and its causes are printed on standard error.",
        ),
        (
            exit::LOSSY,
            "kapell import only: something of the imported project has no kapell equivalent. Each is reported on standard error; the stack is written unless --strict was given.",
        ),
        (
            exit::HELD,
            "kapell fleet only: a rollout failed and its batch was rolled back, or hosts were held back because their desired state failed before; the table says which hosts and why. Change the stacks, or run kapell fleet rollout retry.",
        ),
        (
            exit::WAITING,
            "kapell fleet only: the canaries run the new desired state and the other hosts wait for kapell fleet promote.",
        ),
    ];
    for (code, meaning) in codes {
        roff.control("TP", []).text([bold(code.to_string())]).text([roman(meaning)]);
    }

    roff.control("SH", ["ENVIRONMENT"]);
    let environment: [(&str, &str); 5] = [
        (
            "KAPELL_CONFIG_DIR",
            "The configuration directory, as --config-dir (which takes precedence). Default: /etc/kapell. The generator honours it too.",
        ),
        (
            "KAPELL_UNIT_PATH",
            "A colon-separated list of directories that replaces systemd's unit search path when kapell checks that a generated unit name does not collide with an existing unit. Meant for tests.",
        ),
        (
            "KAPELL_LOG",
            "The log level of kapell's daemons (kapell run, federate, dns, probe) and of kapell apply and kapell fleet: error, warn, info (the default), debug or trace. At debug, kapell apply also says how it learned the end of each job it waited for, and kapell fleet and federate each request sent to a host, its size and how long its reply took.",
        ),
        (
            "DOCKER_HOST",
            "The Docker Engine API socket used by container services (default: unix:///var/run/docker.sock).",
        ),
        (
            "KAPELL_SECRETS_DIR",
            "Where the supervisor stages secrets for containers (default: /run/kapell/secrets); it must be on a memory file system.",
        ),
    ];
    for (name, meaning) in environment {
        roff.control("TP", []).text([bold(name)]).text([roman(meaning)]);
    }

    roff.control("SH", ["FILES"]);
    let files: [(&str, &str); 5] = [
        ("/etc/kapell/<stack>.toml", "One stack per file; see kapell.toml(5)."),
        ("/etc/kapell/fleet.toml", "The fleet of a controller; not a stack. See kapell-fleet.toml(5)."),
        ("/usr/lib/systemd/system-generators/kapell-generator", "The systemd generator; see kapell-generator(8)."),
        ("/run/systemd/generator/", "Where the generator writes the units at boot and at every daemon-reload."),
        (
            "/etc/kapell/received/",
            "The unit sets a fleet controller installed on this host (kapell receive): generations and the current symlink, which the generator emits.",
        ),
    ];
    for (path, meaning) in files {
        roff.control("TP", []).text([bold(path)]).text([roman(meaning)]);
    }

    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "kapell.toml(5), kapell-fleet.toml(5), kapell-generator(8), systemctl(1), journalctl(1), \
         systemd.unit(5), systemd.service(5), systemd.generator(7)",
    )]);
    strip_preamble(&roff.to_roff())
}

/// Output of one of clap_mangen's `render_*` functions.
fn render(f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut out = Vec::new();
    f(&mut out).expect("render to memory");
    String::from_utf8(out).expect("roff is UTF-8")
}

/// The roff crate starts every document with two lines defining the apostrophe string; the page
/// needs them once (from the title).
fn strip_preamble(roff: &str) -> String {
    roff.lines()
        .filter(|l| !l.starts_with(".ie \\n(.g .ds Aq") && !l.starts_with(".el .ds Aq"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A section rendered by clap_mangen, without its preamble and `.SH` heading; a further help
/// heading (`.SH "NETWORK OPTIONS"`) becomes a bold paragraph inside the command's block.
fn section_body(roff: &str) -> String {
    let mut out = String::new();
    let mut first = true;
    for line in strip_preamble(roff).lines() {
        if let Some(heading) = line.strip_prefix(".SH ") {
            if !first {
                out += &format!(".PP\n.B {heading}\n");
            }
            first = false;
            continue;
        }
        out += line;
        out.push('\n');
    }
    out
}

/// The date of the newest entry of packaging/debian/changelog as YYYY-MM-DD: generated pages carry
/// the date of the release they describe, so regenerating them is reproducible.
fn release_date() -> String {
    let changelog = std::fs::read_to_string(repo().join("packaging/debian/changelog")).expect("changelog");
    let trailer = changelog.lines().find(|l| l.starts_with(" -- ")).expect("changelog trailer line");
    // " -- Name <mail>  Mon, 23 Nov 2026 12:00:00 +0000"
    let date = trailer.rsplit("  ").next().expect("date after two spaces");
    let fields: Vec<&str> = date.split_whitespace().collect();
    assert!(fields.len() >= 4, "unexpected changelog date {date:?}");
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| *m == fields[2]).expect("month name") + 1;
    let day: u32 = fields[1].parse().expect("day");
    format!("{}-{month:02}-{day:02}", fields[3])
}

#[test]
fn generated_pages_and_completions_are_current() {
    let mut golden = bless::Golden::new("cargo test --test manpages");
    for (path, content) in generated() {
        golden.check(&format!("{path} is stale: the command line changed"), &repo().join(path), &content);
    }
    golden.finish();
}

fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo().join("man"))
        .expect("man/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "5" || e == "8"))
        .collect();
    pages.sort();
    let names: Vec<String> =
        pages.iter().map(|p| p.file_name().expect("name").to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["kapell-fleet.toml.5", "kapell-generator.8", "kapell.8", "kapell.toml.5"]);
    pages
}

/// Runs a linter; any output or a non-zero exit is a failure.
fn lint(cmd: &mut Command, page: &Path) -> Option<String> {
    let out = cmd
        .arg(page)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (apt-get install mandoc groff-base)"));
    let messages = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() && messages.trim().is_empty() {
        None
    } else {
        Some(format!("{} ({}):\n{messages}", page.display(), out.status))
    }
}

#[test]
fn every_page_passes_mandoc_lint() {
    // Hand-written pages are held to every style message too; the generated one is not, because
    // clap_mangen writes each help paragraph on one long line ("longer than 80 bytes").
    let failures: Vec<String> = pages()
        .iter()
        .filter_map(|p| {
            let level = if p.ends_with("kapell.8") { "warning" } else { "style" };
            lint(Command::new("mandoc").args(["-T", "lint", "-W", level]), p)
        })
        .collect();
    assert!(failures.is_empty(), "mandoc -T lint:\n{}", failures.join("\n"));
}

#[test]
fn every_page_renders_with_groff_without_warnings() {
    let failures: Vec<String> = pages()
        .iter()
        .filter_map(|p| {
            lint(Command::new("groff").args(["-ww", "-z", "-b", "-k", "-man", "-Tutf8"]).env("LC_ALL", "C.UTF-8"), p)
        })
        .collect();
    assert!(failures.is_empty(), "groff -ww:\n{}", failures.join("\n"));
}

/// kapell.toml(5) is written by hand: it must at least name every key of the stack format.
#[test]
fn stack_page_documents_every_key() {
    let page = std::fs::read_to_string(repo().join("man/kapell.toml.5")).expect("kapell.toml.5");
    let keys = [
        "description",
        "enable",
        "image",
        "command",
        "entrypoint",
        "env",
        "env_files",
        "volumes",
        "ports",
        "network",
        "user",
        "pull",
        "health",
        "cmd",
        "interval",
        "timeout",
        "retries",
        "start_period",
        "on_unhealthy",
        "restart",
        "restart_delay",
        "stop_timeout",
        "memory_max",
        "cpus",
        "pids_max",
        "secrets",
        "requires",
        "wants",
        "replicas",
        "exec",
        "type",
        "working_dir",
        "systemd",
        "placement",
        "hosts",
        "labels",
        "global",
        "file",
        "encrypted",
    ];
    let missing: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| {
            !page.contains(&format!(".B {k}\n"))
                && !page.contains(&format!("\\fB{k}\\fR"))
                && !page.contains(&format!(".BR {k} "))
        })
        .collect();
    assert!(missing.is_empty(), "kapell.toml.5 does not document {missing:?}");
}

/// The hand-written pages carry the version and date of the release, as the generated one does.
#[test]
fn hand_written_pages_name_the_release() {
    let want = format!("{} \"kapell {}\"", release_date(), env!("CARGO_PKG_VERSION"));
    for page in ["man/kapell-generator.8", "man/kapell.toml.5", "man/kapell-fleet.toml.5"] {
        let text = std::fs::read_to_string(repo().join(page)).expect("page");
        let th = text.lines().find(|l| l.starts_with(".TH ")).unwrap_or_default();
        assert!(th.contains(&want), "{page}: `{th}` should carry `{want}`");
    }
}

/// The packages are versioned from Cargo.toml; the Debian changelog must have an entry for it.
#[test]
fn changelog_names_the_crate_version() {
    let changelog = std::fs::read_to_string(repo().join("packaging/debian/changelog")).expect("changelog");
    let first = changelog.lines().next().unwrap_or_default();
    let want = format!("kapell ({}-1) ", env!("CARGO_PKG_VERSION"));
    assert!(first.starts_with(&want), "packaging/debian/changelog starts with {first:?}, expected {want:?}…");
}
