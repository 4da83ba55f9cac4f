//! Spreading independent work over the machine's cores (std threads, no runtime): the generator
//! parses, renders and writes thousands of independent files at every boot.

use nix::sched::{CpuSet, sched_getaffinity, sched_getcpu, sched_setaffinity};
use nix::unistd::Pid;
use std::num::NonZeroUsize;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The number of threads to use: asked once per process, because the standard library reads
/// the cgroup's CPU quota files on every call (four system calls, per stack file otherwise).
fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
}

/// `items.iter().map(f).collect()`, in order, on up to one thread per core. Small inputs stay
/// on the calling thread, where starting threads would cost more than it saves.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    flat_map(items, |item, out| out.push(f(item)))
}

/// Like [`map`], for work that makes any number of results per item: `f` pushes them, in order,
/// onto one vector per batch of items (no vector per item).
///
/// The items go out in batches to whichever thread is free, the calling thread among them (one
/// thread fewer to start). A thread that starts late, or shares its core with other work, takes
/// fewer batches instead of holding the others up at the end with its half undone: at worst the
/// calling thread does everything, as it would alone. Batches shrink as the items run out
/// ([`Batches`]), so the threads also finish together: the last ones are single items. The
/// workers run off the caller's core, and in the generator the caller keeps its core until the
/// phase ends ([`Apart`]).
pub fn flat_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T, &mut Vec<R>) + Sync) -> Vec<R> {
    let run = |part: &[T]| {
        let mut out = Vec::with_capacity(part.len());
        for item in part {
            f(item, &mut out);
        }
        out
    };
    // Asked in this order: the core count costs system calls the first time (`threads`).
    if items.len() < 16 || IN_PARALLEL.get() {
        return run(items);
    }
    let threads = threads();
    if threads < 2 {
        return run(items);
    }
    let batches = Batches::new(items.len(), threads);
    let take_batches = || {
        // Work inside a batch (a stack file's services) stays on its thread: every core is busy
        // with batches already, and a nested call would start threads on them all again.
        let _inside = InParallel::enter();
        let mut done = Vec::new();
        while let Some(batch) = batches.take() {
            done.push((batch.start, run(&items[batch])));
        }
        done
    };
    #[cfg(test)]
    let counter = crate::lookups::current();
    #[cfg(test)]
    let take_batches = || crate::lookups::with(counter.clone(), take_batches);
    let mut apart = Apart::plan();
    let elsewhere = apart.as_ref().map(|a| a.workers);
    std::thread::scope(|scope| {
        // A worker the system cannot start (a cgroup's pids limit, RLIMIT_NPROC) is done
        // without: its batches go to the others, to the caller alone at worst. The generator runs
        // at boot, where a crash would leave the host without its units.
        let workers: Vec<_> = (1..threads)
            .map_while(|_| {
                let worker = std::thread::Builder::new()
                    .spawn_scoped(scope, || {
                        start_elsewhere(elsewhere.as_ref());
                        take_batches()
                    })
                    .ok()?;
                // A worker the kernel queued behind this thread (see `start_elsewhere`) runs now
                // and moves itself, and this thread gets its core back, instead of the worker
                // waiting for this thread's time slice to end, milliseconds in
                // (docs/benchmarks.md). With nothing else queued here, the yield returns at once.
                std::thread::yield_now();
                Some(worker)
            })
            .collect();
        if let Some(apart) = apart.as_mut() {
            apart.keep_caller();
        }
        let mut done = take_batches();
        for worker in workers {
            done.extend(worker.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        done.sort_unstable_by_key(|(start, _)| *start);
        // Each batch's results are freed once moved: they are never all in memory twice.
        let mut out = Vec::with_capacity(done.iter().map(|(_, r)| r.len()).sum());
        for (_, results) in done {
            out.extend(results);
        }
        out
    })
}

/// Runs `side` on a thread of its own while the caller runs `main`; returns once both are done.
/// For a short job whose result is needed later and that can go beside the caller's work (the
/// generator lists systemd's unit directories while it parses). The thread is left where the
/// kernel puts it: moved off the caller's core as [`flat_map`]'s workers are, the generator was
/// 0.3 ms slower at 1,000 services (docs/benchmarks.md). With one core, `side` runs first; when
/// no thread can be started (see [`flat_map`]), after `main`.
pub fn beside<R>(side: impl FnOnce() + Send, main: impl FnOnce() -> R) -> R {
    if threads() < 2 {
        side();
        return main();
    }
    // Whichever thread takes `side` runs it: the new one, or the caller if it did not start.
    let side = std::sync::Mutex::new(Some(side));
    let take = || side.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    std::thread::scope(|scope| {
        let started = std::thread::Builder::new().spawn_scoped(scope, || take().map(|f| f())).is_ok();
        let out = main();
        if !started && let Some(f) = take() {
            f();
        }
        out
    })
}

thread_local! {
    /// Whether this thread is taking batches of a [`flat_map`].
    static IN_PARALLEL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as taking batches until dropped, also when a batch panics (a caller that
/// catches the panic then gets parallel maps on this thread again).
struct InParallel {
    outer: bool,
}

impl InParallel {
    fn enter() -> Self {
        Self { outer: IN_PARALLEL.replace(true) }
    }
}

impl Drop for InParallel {
    fn drop(&mut self) {
        IN_PARALLEL.set(self.outer);
    }
}

/// The items of a [`flat_map`], handed out in batches of a share of what is left (guided
/// scheduling): large while there is much to do, so handing them out costs nothing next to the
/// work (a stack file, or a unit rendered and written), and single items at the end. With
/// batches of a fixed size, the thread that took the last one finished up to a whole batch after
/// the others, which waited: 0.45 ms a run on average at 1,000 services, 1.3 ms at 10,000
/// (docs/benchmarks.md).
struct Batches {
    next: AtomicUsize,
    len: usize,
    /// A batch is the items left divided by this (at least one item).
    share: usize,
}

/// The first batch is 1/(threads x this) of the items: small enough that a thread that stalls
/// (preempted, or sharing its core) holds up little of the work.
const SHARES_PER_THREAD: usize = 8;

impl Batches {
    fn new(len: usize, threads: usize) -> Self {
        Self { next: AtomicUsize::new(0), len, share: threads * SHARES_PER_THREAD }
    }

    /// The next batch, or `None` once every item is taken.
    fn take(&self) -> Option<std::ops::Range<usize>> {
        let mut start = self.next.load(Ordering::Relaxed);
        loop {
            let left = self.len.checked_sub(start).filter(|&left| left > 0)?;
            let end = start + (left / self.share).max(1);
            match self.next.compare_exchange_weak(start, end, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(start..end),
                Err(now) => start = now,
            }
        }
    }
}

/// Whether a parallel phase's caller keeps its core ([`Apart::keep_caller`]): asked for by the
/// generator, a short-lived process of its own ([`keep_the_caller_on_its_core`]). A daemon's
/// thread is never pinned, even for a moment, so it always follows the cores its cgroup gives it.
static KEEP_CALLER: AtomicBool = AtomicBool::new(false);

/// For the rest of this process, the thread that starts a parallel phase keeps its core until
/// the phase ends ([`Apart`]).
pub fn keep_the_caller_on_its_core() {
    KEEP_CALLER.store(true, Ordering::Relaxed);
}

/// The calling thread and its workers on different cores for one parallel phase. Linux's own
/// scheduler spreads them over idle cores, but a kernel that packs tasks onto fewer virtual CPUs
/// (some VMs' `sched_vcpu_pack`) queues a new worker behind its caller, and moves the caller
/// onto its worker's core later, and the two run one after the other while a core sits idle
/// (measured in docs/benchmarks.md). So each worker asks for the cores but its caller's
/// ([`start_elsewhere`]), and in the generator the caller stays on its core once the workers
/// have started, until the phase ends; then it may run anywhere it could before.
struct Apart {
    /// Where the caller could run before the phase.
    caller_could: CpuSet,
    /// The core the caller is on when the phase starts.
    here: usize,
    /// The cores the caller may use, but `here`.
    workers: CpuSet,
    /// Whether the caller is kept on `here` (and so gets `caller_could` back when dropped).
    kept: bool,
}

impl Apart {
    /// Where the threads of a phase go; `None` when that leaves no other core, or the kernel does
    /// not say where the caller runs. Changes nothing yet.
    fn plan() -> Option<Self> {
        let here = sched_getcpu().ok()?;
        let caller_could = sched_getaffinity(Pid::from_raw(0)).ok()?;
        let mut workers = caller_could;
        workers.unset(here).ok()?;
        (0..CpuSet::count()).any(|c| workers.is_set(c).unwrap_or(false)).then_some(Self {
            caller_could,
            here,
            workers,
            kept: false,
        })
    }

    /// Keeps the caller on its core until dropped, where the process asked for it. Called once
    /// the workers have started: they inherit the caller's cores, not this one core, so a
    /// kernel that places a new thread on an idle core still can.
    fn keep_caller(&mut self) {
        if !KEEP_CALLER.load(Ordering::Relaxed) {
            return;
        }
        let mut kept = CpuSet::new();
        self.kept = kept.set(self.here).is_ok() && sched_setaffinity(Pid::from_raw(0), &kept).is_ok();
    }
}

impl Drop for Apart {
    fn drop(&mut self) {
        if self.kept {
            // Best effort: the caller ran on an allowed core all along.
            let _ = sched_setaffinity(Pid::from_raw(0), &self.caller_could);
        }
    }
}

/// Keeps a worker off its caller's core ([`Apart`]). A hint: where the kernel refuses it, the
/// worker runs wherever its caller could. The worker only takes batches, so a busy core it
/// lands on slows nobody: the caller takes the rest.
fn start_elsewhere(workers: Option<&CpuSet>) {
    if let Some(cores) = workers {
        let _ = sched_setaffinity(Pid::from_raw(0), cores);
    }
}

#[cfg(test)]
mod tests {
    /// Batches cover every item once, in order, shrink as the items run out, and end in single
    /// items.
    #[test]
    fn batches_shrink_to_single_items_and_cover_everything_once() {
        let batches = super::Batches::new(1100, 2);
        let taken: Vec<_> = std::iter::from_fn(|| batches.take()).collect();
        assert_eq!(taken.first(), Some(&(0..68)), "the first is 1/16 of the items");
        assert!(taken.windows(2).all(|w| w[0].end == w[1].start), "contiguous: {taken:?}");
        assert_eq!(taken.last().map(|b| b.end), Some(1100));
        assert!(taken.windows(2).all(|w| w[0].len() >= w[1].len()), "never growing: {taken:?}");
        assert!(taken.iter().rev().take(15).all(|b| b.len() == 1), "the last ones are single: {taken:?}");
        assert!(taken.len() < 150, "{} batches", taken.len());
        assert_eq!(batches.take(), None, "and stays empty");
    }

    #[test]
    fn keeps_order_whichever_thread_takes_a_batch() {
        let items: Vec<u32> = (0..1000).collect();
        assert_eq!(super::map(&items, |i| i * 2), items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let twice: Vec<u32> = items.iter().flat_map(|&i| [i, i]).collect();
        assert_eq!(super::flat_map(&items, |&i, out| out.extend([i, i])), twice);
    }

    /// The thread that takes the first batch is held up: the other takes the remaining batches,
    /// and the results still come out in the items' order, each once.
    #[test]
    fn a_slow_batch_does_not_reorder_or_lose_results() {
        let items: Vec<u32> = (0..200).collect();
        let out = super::map(&items, |&i| {
            if i == 0 {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            i
        });
        assert_eq!(out, items);
    }

    /// For a phase, the workers are offered every allowed core but the caller's; the caller keeps
    /// its core only where the process asked for it, and afterwards may run wherever it could
    /// before.
    #[test]
    fn the_workers_get_the_other_cores_and_the_caller_keeps_its_own_if_asked() {
        let affinity = || super::sched_getaffinity(super::Pid::from_raw(0)).expect("affinity");
        let cores = |set: &super::CpuSet| -> Vec<usize> {
            (0..super::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect()
        };
        let allowed = cores(&affinity());
        let Some(mut apart) = super::Apart::plan() else {
            assert_eq!(allowed.len(), 1, "only a single allowed core leaves none");
            return;
        };
        let offered = cores(&apart.workers);
        assert!(allowed.contains(&apart.here), "{} of {allowed:?}", apart.here);
        assert!(!offered.is_empty() && !offered.contains(&apart.here), "{offered:?}, caller on {}", apart.here);
        assert!(offered.iter().all(|c| allowed.contains(c)), "{offered:?} of {allowed:?}");
        assert_eq!(offered.len() + 1, allowed.len());
        assert_eq!(cores(&affinity()), allowed, "planning changes nothing");

        // Not asked for (a daemon): the caller is left alone.
        apart.keep_caller();
        assert!(!apart.kept);
        assert_eq!(cores(&affinity()), allowed);

        super::keep_the_caller_on_its_core();
        apart.keep_caller();
        assert!(apart.kept);
        assert_eq!(cores(&affinity()), [apart.here], "the caller keeps its one core");
        drop(apart);
        assert_eq!(cores(&affinity()), allowed, "restored after the phase");
        // A whole map leaves the caller where it could run before, too.
        let items: Vec<u32> = (0..100).collect();
        assert_eq!(super::map(&items, |i| i + 1).len(), 100);
        assert_eq!(cores(&affinity()), allowed);
        super::KEEP_CALLER.store(false, super::Ordering::Relaxed);
    }

    /// A map inside a map (services inside stack files) runs on the thread of its batch: no
    /// thread starts threads.
    #[test]
    fn a_map_inside_a_map_stays_on_its_thread() {
        let outer: Vec<u32> = (0..64).collect();
        let threads_seen = super::map(&outer, |&i| {
            let inner: Vec<u32> = (0..64).collect();
            let me = std::thread::current().id();
            let ids = super::map(&inner, |_| std::thread::current().id());
            assert!(ids.iter().all(|id| *id == me), "item {i}: an inner item ran on another thread");
            me
        });
        assert_eq!(threads_seen.len(), outer.len());
        // And the flag is down again once the outer map is done.
        assert!(!super::IN_PARALLEL.get());
    }

    #[test]
    fn a_panicking_batch_leaves_the_flag_down() {
        let items: Vec<u32> = (0..64).collect();
        // Every batch panics, so the calling thread's does too: a worker stops at its first
        // batch, and with fewer threads than batches the caller is left some.
        let caught = std::panic::catch_unwind(|| super::map(&items, |&i| -> u32 { panic!("item {i}") }));
        assert!(caught.is_err());
        assert!(!super::IN_PARALLEL.get(), "the caller's thread may run parallel maps again");
    }
}
