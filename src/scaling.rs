//! The pipeline is linear in services and in services per stack (issue 8), checked by counting
//! lookups and comparisons by name ([`crate::lookups`]) rather than by timing. Putting back the
//! old linear `Stack::service` makes it fail (3.95× per service), and so does the old scan for a
//! cross-stack dependency's stack (1.5×). A test-only module above every
//! other one: it runs parse, validate, render, the unit-set view and the apply plan together.

use crate::lookups::counted;
use crate::render::{RenderOptions, render_host};
use crate::unitset::UnitSet;
use crate::validate::{UnitSearchPath, check_host};
use std::collections::HashMap;
use std::path::PathBuf;

/// `services` services in stacks of `per_stack`: each requires the one before it, wants the
/// one before that, and each stack's first service requires the previous stack's last.
fn host(services: usize, per_stack: usize) -> Vec<(PathBuf, String)> {
    (0..services / per_stack)
        .map(|i| {
            let mut text = String::new();
            for j in 0..per_stack {
                text.push_str(&format!("[services.svc{j}]\n"));
                text.push_str(if j.is_multiple_of(2) { "image = \"app:1\"\n" } else { "exec = [\"/bin/worker\"]\n" });
                let mut requires = Vec::new();
                if j > 0 {
                    requires.push(format!("\"svc{}\"", j - 1));
                } else if i > 0 {
                    requires.push(format!("\"s{}.svc{}\"", i - 1, per_stack - 1));
                }
                text.push_str(&format!("requires = [{}]\n", requires.join(", ")));
                if j > 1 {
                    text.push_str(&format!("wants = [\"svc{}\"]\n", j - 2));
                }
                if j % 10 == 4 {
                    text.push_str("replicas = 2\n");
                }
            }
            (PathBuf::from(format!("/etc/kapell/s{i}.toml")), text)
        })
        .collect()
}

/// Lookups by name for the whole pipeline: parse, validate, render, read the rendered set
/// back, merge it and plan an apply against it.
fn lookups(services: usize, per_stack: usize) -> u64 {
    let files = host(services, per_stack);
    let ((), n) = counted(|| {
        let parsed = files.iter().map(|(path, text)| crate::config::parse_stack(path, text)).collect();
        let checked = check_host(parsed, &UnitSearchPath::new(Vec::new()));
        assert!(checked.is_ok(), "{:?}", checked.diagnostics.first().map(ToString::to_string));
        let set = UnitSet::from_rendered(&render_host(&checked.stacks, &RenderOptions::default()));
        let both = set.merged(&set);
        let plan = crate::apply::plan::plan(&both, &set, &HashMap::new(), None).expect("plan");
        assert!(!plan.reload && plan.units > services);
    });
    n
}

/// Lookups and name comparisons per service stay the same from 500 to 2,000 services, in stacks
/// of ten and in one stack: a step that compares or looks up once per pair of services
/// (quadratic) shows up as a fourfold count per service.
#[test]
fn every_step_is_linear_in_services_and_in_services_per_stack() {
    for per_stack in [10, 0] {
        let (small, large) = (500, 2_000);
        let shape = |n: usize| if per_stack == 0 { n } else { per_stack };
        let a = lookups(small, shape(small));
        let b = lookups(large, shape(large));
        assert!(a >= small as u64, "the pipeline looks names up ({a} lookups for {small} services)");
        let growth = (b as f64 / large as f64) / (a as f64 / small as f64);
        assert!(
            growth < 1.1,
            "lookups per service grew {growth:.2}× from {small} to {large} services ({a} → {b}; stacks of {}): \
             a step is no longer linear",
            shape(large)
        );
    }
}
