//! Spreading independent work over the machine's cores (std threads, no runtime): the generator
//! parses, renders and writes thousands of independent files at every boot.

use std::num::NonZeroUsize;
use std::sync::OnceLock;

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
/// onto one vector per thread (no vector per item). The calling thread takes the last share
/// itself: one thread fewer to start.
pub fn flat_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T, &mut Vec<R>) + Sync) -> Vec<R> {
    let threads = threads();
    let run = |part: &[T]| {
        let mut out = Vec::with_capacity(part.len());
        for item in part {
            f(item, &mut out);
        }
        out
    };
    if threads < 2 || items.len() < 16 {
        return run(items);
    }
    let chunk = items.len().div_ceil(threads);
    #[cfg(test)]
    let counter = crate::lookups::current();
    #[cfg(test)]
    let run = |part: &[T]| crate::lookups::with(counter.clone(), || run(part));
    std::thread::scope(|scope| {
        let mut parts = items.chunks(chunk);
        let last = parts.next_back().unwrap_or_default();
        let workers: Vec<_> = parts.map(|part| scope.spawn(|| run(part))).collect();
        let last = run(last);
        let mut shares: Vec<Vec<R>> =
            workers.into_iter().map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect();
        shares.push(last);
        // Each share is freed once moved: the results are never all in memory twice.
        let mut out = Vec::with_capacity(shares.iter().map(Vec::len).sum());
        for share in shares {
            out.extend(share);
        }
        out
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order() {
        let items: Vec<u32> = (0..1000).collect();
        assert_eq!(super::map(&items, |i| i * 2), items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let twice: Vec<u32> = items.iter().flat_map(|&i| [i, i]).collect();
        assert_eq!(super::flat_map(&items, |&i, out| out.extend([i, i])), twice);
    }
}
