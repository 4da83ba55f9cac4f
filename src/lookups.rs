//! Counting lookups and comparisons by name, so that a test can tell a linear pipeline from a
//! quadratic one by counting work instead of timing it (timings on a shared machine say little).
//!
//! Every lookup of a stack or service by name through an index ([`crate::model::Stack`], the
//! renderer's host index, [`crate::unitset::StackUnits`]) calls [`count`], and so does every
//! equality comparison of a [`crate::names::Name`] (the model's stack and service names): a scan
//! of a stack's services by name counts one per service it passes. In a normal
//! build [`count`] is empty and compiles away; in the crate's own tests (`scaling.rs`) it adds one to the
//! counter of the current test, which [`crate::parallel`] hands on to its worker threads.

#[cfg(test)]
use std::sync::Arc;
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(test)]
thread_local! {
    static COUNTER: std::cell::RefCell<Option<Arc<AtomicU64>>> = const { std::cell::RefCell::new(None) };
}

/// One lookup by name.
#[inline]
pub(crate) fn count() {
    #[cfg(test)]
    COUNTER.with(|c| {
        if let Some(c) = &*c.borrow() {
            c.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// The counter of this thread, for a worker thread to adopt.
#[cfg(test)]
pub(crate) fn current() -> Option<Arc<AtomicU64>> {
    COUNTER.with(|c| c.borrow().clone())
}

/// Runs `f` with `counter` as this thread's counter.
#[cfg(test)]
pub(crate) fn with<R>(counter: Option<Arc<AtomicU64>>, f: impl FnOnce() -> R) -> R {
    let before = COUNTER.with(|c| c.replace(counter));
    let result = f();
    COUNTER.with(|c| c.replace(before));
    result
}

/// The number of lookups `f` makes (on this thread and the workers it starts).
#[cfg(test)]
pub(crate) fn counted<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let counter = Arc::new(AtomicU64::new(0));
    let result = with(Some(Arc::clone(&counter)), f);
    (result, counter.load(Ordering::Relaxed))
}
