//! The stack an import builds: kapell's keys with the comments a person needs, filled by `map`
//! (names, commands, health, limits, dependencies) and `container` (what a container sees),
//! written by `write`.

use super::Note;
use std::path::Path;

pub(super) struct Context<'a> {
    /// The Compose project name (named volumes and built images carry it).
    pub project: &'a str,
    pub stack: &'a str,
    /// The project directory: relative paths are relative to it.
    pub dir: &'a Path,
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Short-form volume options compose_spec does not read, given back to each volume.
    pub volume_options: &'a super::docker_forms::VolumeOptions,
}

/// The stack to write: kapell's keys with the comments a person needs.
pub(super) struct Draft {
    pub stack: String,
    pub services: Vec<Svc>,
    pub secrets: Vec<(String, String)>,
}

#[derive(Default)]
pub(super) struct Svc {
    pub name: String,
    pub compose_name: String,
    pub image: String,
    /// Why the image is what it is, when it is not the file's `image`.
    pub image_comment: Option<String>,
    pub pull: Option<&'static str>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub env_files: Vec<String>,
    /// Each volume with a comment (where a named volume's data lives).
    pub volumes: Vec<(String, Option<String>)>,
    pub ports: Vec<String>,
    pub network: Option<(String, String)>,
    pub user: Option<String>,
    pub health: Option<Health>,
    pub restart: &'static str,
    pub restart_comment: Option<&'static str>,
    pub restart_delay: Option<String>,
    pub stop_timeout: Option<String>,
    pub memory_max: Option<String>,
    pub cpus: Option<f64>,
    pub pids_max: Option<u64>,
    /// The limits above that `deploy.resources.limits` set (by kapell key), so that a problem
    /// with one is reported at the Compose key it came from.
    pub limits_from_deploy: Vec<&'static str>,
    pub replicas: Option<u64>,
    pub requires: Vec<String>,
    pub wants: Vec<String>,
    pub secrets: Vec<String>,
}

impl Svc {
    /// The Compose key that kapell's `key` of this service came from, where it depends on the
    /// file (`memory_max` from `mem_limit` or from `deploy.resources.limits.memory`).
    pub fn compose_key_of(&self, key: &str) -> Option<&'static str> {
        if !self.limits_from_deploy.contains(&key) {
            return None;
        }
        match key {
            "memory_max" => Some("deploy.resources.limits.memory"),
            "cpus" => Some("deploy.resources.limits.cpus"),
            "pids_max" => Some("deploy.resources.limits.pids"),
            _ => None,
        }
    }
}

pub(super) struct Health {
    pub cmd: Vec<String>,
    /// Set when the test only asks a local URL or port: written instead of `cmd`.
    pub host_check: Option<super::health::HostCheck>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u64>,
    pub start_period: Option<String>,
}

pub(super) fn lost(notes: &mut Vec<Note>, place: impl Into<String>, message: impl Into<String>) {
    notes.push(Note { lossy: true, place: place.into(), message: message.into() });
}

pub(super) fn info(notes: &mut Vec<Note>, place: impl Into<String>, message: impl Into<String>) {
    notes.push(Note { lossy: false, place: place.into(), message: message.into() });
}
