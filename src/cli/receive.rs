//! `kapell receive`: the peer side of a fleet push (run by the controller over SSH).

use super::exit;
use crate::fleet::peer::{gate, lifecycle};
use anyhow::{Context, Result};
use std::io::Write as _;
use std::path::Path;

/// Answer one request of a fleet controller: read it from stdin, reply with JSON on stdout.
///
/// The only command a controller runs on a host, so the controller's key can be pinned to it in
/// authorized_keys: restrict,command="kapell receive" ssh-ed25519 AAAA… controller. An install
/// request stages the pushed unit set under /etc/kapell/received, makes it current atomically,
/// and makes systemd run it (as `kapell apply` does for local stacks); it finishes even if the
/// connection drops. Not meant to be run by hand.
///
/// Exit status: 0 the request was carried out, 3 it was refused or a unit failed (the reply says
/// which and why).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Revert GENERATION if the controller has not confirmed it (run by the timer an install
    /// with a confirm window starts; not for people).
    #[arg(long, value_name = "GENERATION", hide = true)]
    pub revert_unconfirmed: Option<String>,
}

pub fn run(config_dir: &Path, args: Args) -> Result<u8> {
    if let Some(generation) = args.revert_unconfirmed {
        let reply = lifecycle::revert_unconfirmed(config_dir, &generation);
        if let Some(why) = &reply.rolled_back {
            eprintln!("{why}");
        }
        if let Some(e) = &reply.error {
            eprintln!("error: {e}");
            return Ok(exit::FAILED);
        }
        return Ok(exit::OK);
    }
    gate::ignore_hangup();
    let input = gate::read_request(std::io::stdin().lock())?;
    let reply = gate::handle(config_dir, input);
    let mut text = serde_json::to_vec(&reply).context("cannot encode the reply")?;
    text.push(b'\n');
    // The controller may be gone; the work is done and saved either way.
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&text).and_then(|()| stdout.flush());
    Ok(if reply.error.is_none() && reply.failures == 0 { exit::OK } else { exit::FAILED })
}
