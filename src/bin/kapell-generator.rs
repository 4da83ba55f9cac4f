//! `kapell-generator`, the systemd generator (kapell-generator(8)), as an executable of its own.
//!
//! systemd runs it at every boot and every `daemon-reload`. Built from the same library as
//! `kapell`, it carries only what the generator reaches: a seventh of the size, and 0.3-0.5 ms
//! less per run at 1,000 services than `kapell` started under this name (docs/benchmarks.md).
//! `kapell` still runs as the generator when started under this name, for a hand-made link.

/// mimalloc, in this executable only: the generator allocates tens of thousands of small values
/// on two threads and exits, where glibc's malloc and free cost a tenth of its CPU
/// (docs/benchmarks.md). The long-running commands (the supervisor, the daemons) keep glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kapell::cli::generator_main()
}
