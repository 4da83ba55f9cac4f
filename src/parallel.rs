//! Spreading independent work over the machine's cores (std threads, no runtime): the generator
//! parses, renders and writes thousands of independent files at every boot.

use nix::sched::{CpuSet, sched_getaffinity, sched_getcpu, sched_setaffinity};
use nix::unistd::Pid;
use std::num::NonZeroUsize;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

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
/// caller and its workers run on different cores until the phase ends ([`Apart`]).
pub fn flat_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T, &mut Vec<R>) + Sync) -> Vec<R> {
    let threads = threads();
    let run = |part: &[T]| {
        let mut out = Vec::with_capacity(part.len());
        for item in part {
            f(item, &mut out);
        }
        out
    };
    if threads < 2 || items.len() < 16 || IN_PARALLEL.get() {
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
    let apart = Apart::new();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (1..threads)
            .map(|_| {
                let worker = scope.spawn(|| {
                    start_elsewhere(apart.as_ref());
                    take_batches()
                });
                // A worker the kernel queued behind this thread (see `start_elsewhere`) runs now
                // and moves itself, and this thread gets its core back, instead of the worker
                // waiting for this thread's time slice to end, milliseconds in
                // (docs/benchmarks.md). With nothing else queued here, the yield returns at once.
                std::thread::yield_now();
                worker
            })
            .collect();
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
/// the others, which waited: 0.8-1 ms of 1,100 units' render phase (docs/benchmarks.md).
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

/// The calling thread and its workers on different cores for one parallel phase. Linux's own
/// scheduler spreads them over idle cores, but a kernel that packs tasks onto fewer virtual CPUs
/// (some VMs' `sched_vcpu_pack`) queues a new worker behind its caller, and moves the caller
/// onto its worker's core later, and the two run one after the other while a core sits idle
/// (measured in docs/benchmarks.md). So the caller stays on the core it is on until the phase
/// ends (then it may run anywhere it could before), and the workers run on the others.
struct Apart {
    /// Where the caller could run before the phase.
    caller_could: CpuSet,
    /// The cores the caller may use, but the one it keeps.
    workers: CpuSet,
}

impl Apart {
    /// Keeps the caller on its core; `None` (and nothing changed) when that leaves no other core,
    /// or the kernel does not say where the caller runs or refuses to keep it there.
    fn new() -> Option<Self> {
        let here = sched_getcpu().ok()?;
        let caller_could = sched_getaffinity(Pid::from_raw(0)).ok()?;
        let mut workers = caller_could;
        workers.unset(here).ok()?;
        if !(0..CpuSet::count()).any(|c| workers.is_set(c).unwrap_or(false)) {
            return None;
        }
        let mut kept = CpuSet::new();
        kept.set(here).ok()?;
        sched_setaffinity(Pid::from_raw(0), &kept).ok()?;
        Some(Self { caller_could, workers })
    }
}

impl Drop for Apart {
    fn drop(&mut self) {
        // Best effort: the caller ran on an allowed core all along.
        let _ = sched_setaffinity(Pid::from_raw(0), &self.caller_could);
    }
}

/// Keeps a worker off its caller's core ([`Apart`]). The worker only takes batches, so a busy
/// core it lands on slows nobody: the caller takes the rest.
fn start_elsewhere(apart: Option<&Apart>) {
    if let Some(apart) = apart {
        // A hint: where the kernel refuses it, the worker runs where its caller could (it was
        // started on the caller's one kept core).
        if sched_setaffinity(Pid::from_raw(0), &apart.workers).is_err() {
            let _ = sched_setaffinity(Pid::from_raw(0), &apart.caller_could);
        }
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

    /// For a phase, the caller keeps one allowed core and the workers are offered the others;
    /// afterwards the caller may run wherever it could before.
    #[test]
    fn the_caller_keeps_its_core_and_the_workers_get_the_others_for_a_phase() {
        let affinity = || super::sched_getaffinity(super::Pid::from_raw(0)).expect("affinity");
        let cores = |set: &super::CpuSet| -> Vec<usize> {
            (0..super::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect()
        };
        let allowed = cores(&affinity());
        match super::Apart::new() {
            Some(apart) => {
                let kept = cores(&affinity());
                let offered = cores(&apart.workers);
                assert_eq!(kept.len(), 1, "the caller keeps one core: {kept:?}");
                assert!(allowed.contains(&kept[0]), "{kept:?} of {allowed:?}");
                assert!(!offered.is_empty() && !offered.contains(&kept[0]), "{offered:?}, caller on {kept:?}");
                assert!(offered.iter().all(|c| allowed.contains(c)), "{offered:?} of {allowed:?}");
                assert_eq!(offered.len() + 1, allowed.len());
                drop(apart);
                assert_eq!(cores(&affinity()), allowed, "restored after the phase");
            }
            None => assert_eq!(allowed.len(), 1, "only a single allowed core leaves none"),
        }
        // A whole map leaves the caller where it could run before, too.
        let items: Vec<u32> = (0..100).collect();
        assert_eq!(super::map(&items, |i| i + 1).len(), 100);
        assert_eq!(cores(&affinity()), allowed);
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
