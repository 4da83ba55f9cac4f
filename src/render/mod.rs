//! Rendering: the validated model becomes unit files. Pure: no I/O, so it is tested with golden
//! files and `systemd-analyze verify`.

pub mod container;
pub mod health;
mod service;

use crate::model::{DepTarget, Dependency, Service, Stack};
use crate::unitfile::UnitText;
pub use crate::unitset::OutputFile;
use crate::unitset::markers;
use std::collections::HashMap;

/// Where `ExecStart=` finds kapell on the hosts that run the units.
pub const DEFAULT_KAPELL_PATH: &str = "/usr/bin/kapell";

/// Settings of a rendering that are not part of the stacks.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// The kapell binary named in container services' `ExecStart=`.
    pub kapell_path: String,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self { kapell_path: DEFAULT_KAPELL_PATH.to_string() }
    }
}

/// Renders the unit set of one host: every file of every stack in `stacks`, stack by stack (in
/// the order given), each stack as its target, its `multi-user.target.wants/` link when enabled,
/// then its services' units in file order.
///
/// `stacks` are checked stacks ([`crate::host::load`], or a fleet controller's share of them for
/// one host: [`Stack::retain_services`] keeps the services placed there). `"<stack>.<service>"`
/// dependencies resolve against `stacks`; one naming a stack or service not among them becomes
/// the plain unit name `<stack>-<service>.service`. Pure and deterministic: the same stacks give
/// the same bytes on the generator, `kapell apply`, `kapell generate` and a fleet controller.
pub fn render_host(stacks: &[Stack], options: &RenderOptions) -> Vec<OutputFile> {
    render_host_only(stacks, |_| true, options)
}

/// [`render_host`] for the stacks `only` accepts, with dependencies still resolved against all
/// of `stacks` (`kapell generate FILE` renders one stack that requires its neighbours).
pub fn render_host_only(stacks: &[Stack], only: impl Fn(&Stack) -> bool, options: &RenderOptions) -> Vec<OutputFile> {
    render_each(stacks, only, options, |file| file)
}

/// [`render_host_only`], handing each file to `consume` on the thread that rendered it, as soon
/// as it is rendered; returns what `consume` returned, in the order of the files. The generator
/// writes each unit there: the writes spread over the cores with the rendering, and the units'
/// text is never all in memory at once.
pub fn render_each<R: Send>(
    stacks: &[Stack],
    only: impl Fn(&Stack) -> bool,
    options: &RenderOptions,
    consume: impl Fn(OutputFile) -> R + Sync,
) -> Vec<R> {
    let host = Host::new(stacks);
    let selected: Vec<(&Stack, Shared)> = stacks.iter().filter(|s| only(s)).map(|s| (s, Shared::new(s))).collect();
    // Every unit renders independently, so the work is split by unit, not by stack: one stack
    // of 10,000 services uses every core as 1,000 stacks of ten do.
    let jobs: Vec<Job> = selected
        .iter()
        .flat_map(|(stack, shared)| {
            std::iter::once(Job::Target(stack, shared))
                .chain(stack.services().iter().map(|s| Job::Service(stack, s, shared)))
        })
        .collect();
    crate::parallel::flat_map(&jobs, |job, out| match *job {
        Job::Target(stack, shared) => render_target(stack, shared, |file| out.push(consume(file))),
        Job::Service(stack, service, shared) => {
            let text = service::service_unit(stack, service, &host, options, shared);
            out.push(consume(OutputFile::Unit { name: service.unit_file_name(&stack.name), text }));
        }
    })
}

/// One unit to render.
enum Job<'a> {
    /// A stack's target (and the link that enables it).
    Target(&'a Stack, &'a Shared),
    Service(&'a Stack, &'a Service, &'a Shared),
}

/// The stacks of a host by name, for resolving dependencies in O(1).
pub(crate) struct Host<'a> {
    by_name: HashMap<&'a str, &'a Stack>,
}

impl<'a> Host<'a> {
    fn new(stacks: &'a [Stack]) -> Self {
        // Two stacks of one name (`kapell check` given a file and its namesake): the later wins.
        Self { by_name: stacks.iter().map(|s| (s.name.as_str(), s)).collect() }
    }

    fn stack(&self, name: &str) -> Option<&'a Stack> {
        crate::lookups::count();
        self.by_name.get(name).copied()
    }
}

/// A stack's target, and the link that enables it.
fn render_target(stack: &Stack, shared: &Shared, mut out: impl FnMut(OutputFile)) {
    out(OutputFile::Unit { name: shared.target.clone(), text: target_unit(stack, shared) });
    if stack.enable {
        out(OutputFile::Link {
            path: ["multi-user.target.wants/", &shared.target].concat(),
            target: ["../", &shared.target].concat(),
        });
    }
}

/// What every unit of a stack repeats, built once per stack rather than once per unit.
struct Shared {
    /// The comment every generated file starts with.
    header: [String; 2],
    /// `SourcePath=`: the stack file.
    source_path: String,
    /// The stack's target, `<stack>.target`: each service is `PartOf=` it.
    target: String,
}

impl Shared {
    fn new(stack: &Stack) -> Self {
        let path = stack.path.display().to_string();
        Self {
            header: [
                format!("Generated by kapell from {path}."),
                "Do not edit: change the stack file, then run `kapell apply` or `systemctl daemon-reload`.".to_string(),
            ],
            source_path: path,
            target: stack.target_unit(),
        }
    }
}

/// `<stack>.target`: wants every service (instance) of the stack.
fn target_unit(stack: &Stack, shared: &Shared) -> String {
    let mut unit = UnitText::new(&shared.header);
    let description = match &stack.description {
        Some(d) => [d, " (", &stack.name, ")"].concat(),
        None => ["kapell stack ", &stack.name].concat(),
    };
    let mut section = unit.section("Unit");
    section.text("Description", &description);
    section.text("SourcePath", &shared.source_path);
    let wants: Vec<String> = stack.services().iter().flat_map(|s| s.running_units(&stack.name)).collect();
    section.line("Wants", &wants.join(" "));
    section.line(markers::STACK_KEY, &stack.name);
    if stack.enable {
        unit.section("Install").line("WantedBy", "multi-user.target");
    }
    unit.finish()
}

/// The units a dependency names (a replicated service is every one of its instances).
fn dependency_units(stack: &Stack, dep: &Dependency, host: &Host) -> Vec<String> {
    let (stack_name, service_name) = match &dep.target {
        DepTarget::Unit(unit) => return vec![unit.clone()],
        DepTarget::Local(service) => (stack.name.as_str(), service.as_str()),
        DepTarget::Remote { stack, service } => (stack.as_str(), service.as_str()),
    };
    let found = if stack_name == stack.name {
        stack.service(service_name)
    } else {
        host.stack(stack_name).and_then(|s| s.service(service_name))
    };
    match found {
        Some(service) => service.running_units(stack_name),
        None => vec![crate::names::service_unit(stack_name, service_name, None)],
    }
}
