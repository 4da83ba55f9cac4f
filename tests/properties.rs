//! Property tests over the parser and renderer.
//!
//! - any string in any free-text field renders into unit text that parses back to exactly the
//!   original value (or, for display text, to its sanitized form), never adding a line, a key or
//!   a section;
//! - random valid service graphs render unit sets that pass `systemd-analyze verify`.

mod toml_text;
mod verify;

use kapell::config::parse_stack;
use kapell::render::container::ContainerSpec;
use kapell::render::{self, OutputFile, RenderOptions};
use kapell::unitfile::UnitFile;
use kapell::unitfile::escape::{self, unquote};
use kapell::validate::{UnitSearchPath, check_host};
use proptest::prelude::*;
use std::path::Path;

fn toml_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| toml_text::string(s)).collect::<Vec<_>>().join(", "))
}

/// Renders one stack file's text; panics with the diagnostics if it is invalid.
fn render_text(name: &str, text: &str) -> Vec<OutputFile> {
    let path = Path::new("/etc/kapell").join(format!("{name}.toml"));
    let parsed = parse_stack(&path, text);
    let checked = check_host(vec![parsed], &UnitSearchPath::new(vec![]));
    assert!(checked.is_ok(), "{text}\n{:?}", checked.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>());
    render::render_host(&checked.stacks, &RenderOptions::default())
}

fn unit(files: &[OutputFile], name: &str) -> UnitFile {
    let text = files
        .iter()
        .find_map(|f| match f {
            OutputFile::Unit { name: n, text } if n == name => Some(text),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no unit {name}"));
    UnitFile::parse(text).expect("rendered unit parses")
}

/// Any string TOML can carry except NUL (refused at validation, tested in the golden suite).
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        "[ -~]*",
        prop::collection::vec(
            prop::sample::select(vec![
                "\"", "'", "\\", "%", "%%", "$", "${X}", "\n", "\r", "\t", " ", ";", "=", "#", "[", "]", "ü", "✓",
                "\u{7f}", "\u{1b}", "\u{2028}", "a", "%i"
            ]),
            0..12
        )
        .prop_map(|v| v.concat()),
    ]
    .prop_map(|s: String| s.replace('\0', ""))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn quote_round_trips(s in any_text()) {
        let q = escape::quote(&s);
        prop_assert!(!q.contains('\n') && !q.contains('\r'));
        prop_assert_eq!(unquote(&q).expect("unquote"), vec![s]);
    }

    #[test]
    fn native_free_text_cannot_change_the_unit(args in prop::collection::vec(any_text(), 0..6), value in any_text(), description in any_text()) {
        let mut exec = vec!["/usr/bin/tool".to_string()];
        exec.extend(args);
        let text = format!(
            "description = {}\n[services.app]\nexec = {}\nenv = {{ VALUE = {} }}\n",
            toml_text::string(&description.replace(|c: char| c.is_control(), "")),
            toml_list(&exec),
            toml_text::string(&value)
        );
        let files = render_text("p", &text);
        let u = unit(&files, "p-app.service");
        let sections: Vec<&str> = u.sections.iter().map(|s| s.name.as_ref()).collect();
        prop_assert_eq!(sections, vec!["Unit", "Service"]);
        let service = u.get_section("Service").expect("[Service]");
        let keys: Vec<&str> = service.entries.iter().map(|(k, _)| k.as_ref()).collect();
        prop_assert_eq!(keys, vec!["Type", "ExecStart", "Environment", "Restart"]);
        let exec_line = service.get("ExecStart").expect("ExecStart");
        prop_assert_eq!(unquote(exec_line.trim_start_matches(':')).expect("argv"), exec);
        prop_assert_eq!(unquote(service.get("Environment").expect("env")).expect("env"), vec![format!("VALUE={value}")]);
        let d = u.get_section("Unit").and_then(|s| s.get("Description")).expect("Description");
        prop_assert!(!d.contains('\n'));
    }

    #[test]
    fn container_spec_round_trips_through_the_unit(cmd in prop::collection::vec(any_text(), 1..5), value in any_text(), health in prop::collection::vec(any_text(), 1..3)) {
        let text = format!(
            "[services.box]\nimage = \"busybox:1\"\ncommand = {}\nentrypoint = {}\nenv = {{ V = {} }}\nhealth = {{ cmd = {} }}\n",
            toml_list(&cmd), toml_list(&cmd), toml_text::string(&value), toml_list(&health)
        );
        let files = render_text("c", &text);
        let u = unit(&files, "c-box.service");
        let spec = ContainerSpec::from_unit(&u).expect("spec parses back");
        prop_assert_eq!(spec.container.command.as_ref(), Some(&cmd));
        prop_assert_eq!(spec.container.entrypoint.as_ref(), Some(&cmd));
        prop_assert_eq!(spec.env, vec![("V".to_string(), value)]);
        prop_assert_eq!(spec.health.map(|h| h.health.check), Some(kapell::model::Check::Cmd(health)));
        let sections: Vec<&str> = u.sections.iter().map(|s| s.name.as_ref()).collect();
        prop_assert_eq!(sections, vec!["Unit", "Service", "X-Kapell-Container", "X-Kapell-Health"]);
    }
}

/// A random valid graph: services refer only to earlier ones, so there is no cycle.
#[derive(Debug, Clone)]
struct Graph {
    services: Vec<ServiceShape>,
}

/// (container?, type index, restart index, requires picks, wants picks, replicas).
type ServiceShape = (bool, u8, u8, Vec<usize>, Vec<usize>, Option<u32>);

fn graph() -> impl Strategy<Value = Graph> {
    prop::collection::vec(
        (
            any::<bool>(),
            0u8..3,
            0u8..3,
            prop::collection::vec(any::<usize>(), 0..3),
            prop::collection::vec(any::<usize>(), 0..2),
            prop::option::of(1u32..4),
        ),
        1..8,
    )
    .prop_map(|services| Graph { services })
}

fn graph_toml(g: &Graph) -> String {
    let mut out = String::from("description = \"random graph\"\n");
    for (i, (container, kind, restart, requires, wants, replicas)) in g.services.iter().enumerate() {
        out.push_str(&format!("\n[services.s{i}]\n"));
        if *container {
            out.push_str("image = \"busybox:1\"\n");
        } else {
            out.push_str("exec = [\"/usr/local/bin/svc\", \"--id\", \"x\"]\n");
            out.push_str(&format!("type = \"{}\"\n", ["simple", "notify", "oneshot"][*kind as usize]));
        }
        let oneshot = !*container && *kind == 2;
        let restarts = if oneshot { ["no", "on-failure", "on-failure"] } else { ["no", "on-failure", "always"] };
        out.push_str(&format!(
            "restart = \"{}\"\nrestart_delay = \"{}ms\"\n",
            restarts[*restart as usize],
            100 * (i + 1)
        ));
        let mut reqs: Vec<String> =
            if i == 0 { vec![] } else { requires.iter().map(|r| format!("s{}", r % i)).collect() };
        reqs.sort();
        reqs.dedup();
        let mut wnts: Vec<String> = if i == 0 {
            vec![]
        } else {
            wants.iter().map(|w| format!("s{}", w % i)).filter(|w| !reqs.contains(w)).collect()
        };
        wnts.sort();
        wnts.dedup();
        out.push_str(&format!("requires = {}\nwants = {}\n", toml_list(&reqs), toml_list(&wnts)));
        if let (Some(n), false) = (replicas, oneshot) {
            out.push_str(&format!("replicas = {n}\n"));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn random_valid_graphs_pass_systemd_analyze_verify(g in graph()) {
        let text = graph_toml(&g);
        let files = render_text("rand", &text);
        let dir = tempfile::tempdir().expect("tempdir");
        kapell::unitset::write(dir.path(), &files, kapell::unitset::Strategy::Replace).expect("write units");
        if let Err(e) = verify::verify_unit_dir(dir.path()) {
            panic!("{text}\n{e}");
        }
    }
}
