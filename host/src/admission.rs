//! Admission to the component's table of pending requests.
//!
//! The component fails a request at once when `max_pending` requests already
//! await their results: an inner guard that must never fire for a caller of
//! the library. So every request that can create a pending entry first takes
//! one of `max_pending` slots here, in FIFO order; the slot travels with the
//! request and is released when the request completes or its instance is
//! lost. A caller that finds every slot busy waits (backpressure), up to its
//! admission timeout, after which it gets a definite failure: nothing was
//! sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// One admitted request's slot; dropping it frees the slot.
pub(crate) type Slot = OwnedSemaphorePermit;

/// Why a caller was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every slot stayed busy for the caller's whole admission timeout.
    TimedOut,
    /// The adapter is shutting down or stopped.
    Closed,
}

/// The slots of one adapter, shared by its handles and its actor.
#[derive(Debug)]
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    capacity: u32,
    /// Callers waiting for a slot now (the `relay_admission_waiting` gauge).
    waiting: AtomicUsize,
    /// Set at shutdown: nobody waits any more (a free slot is still taken).
    closing: AtomicBool,
    /// Wakes the waiters when `closing` is set.
    closed: Notify,
}

impl Admission {
    /// `capacity` slots (the component's `max_pending`).
    pub(crate) fn new(capacity: u32) -> Admission {
        let permits = usize::try_from(capacity)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Admission {
            slots: Arc::new(Semaphore::new(permits)),
            capacity,
            waiting: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            closed: Notify::new(),
        }
    }

    /// Number of slots.
    pub(crate) fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Callers waiting for a slot now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A free slot without waiting: `Ok(None)` when every slot is busy (or
    /// `Closed` then, once shutting down).
    pub(crate) fn try_admit(&self) -> Result<Option<Slot>, Refusal> {
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => Ok(Some(slot)),
            Err(TryAcquireError::NoPermits) if self.closing.load(Ordering::Acquire) => {
                Err(Refusal::Closed)
            }
            Err(TryAcquireError::NoPermits) => Ok(None),
            Err(TryAcquireError::Closed) => Err(Refusal::Closed),
        }
    }

    /// The next slot in FIFO order, waiting at most `timeout`.
    pub(crate) async fn admit(&self, timeout: Duration) -> Result<Slot, Refusal> {
        let closed = self.closed.notified();
        tokio::pin!(closed);
        // Registered before the flag is read, so a concurrent
        // `close_waiters` cannot slip between the check and the wait.
        closed.as_mut().enable();
        if self.closing.load(Ordering::Acquire) {
            return Err(Refusal::Closed);
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        // Counted down however the wait ends, the caller dropping it included.
        let _waiting = Waiting(&self.waiting);
        tokio::select! {
            slot = self.slots.clone().acquire_owned() => slot.map_err(|_| Refusal::Closed),
            () = closed => Err(Refusal::Closed),
            () = tokio::time::sleep(timeout) => Err(Refusal::TimedOut),
        }
    }

    /// Shutdown: callers waiting for a slot, and later callers that would
    /// have to wait, fail with [`Refusal::Closed`]; a caller that finds a
    /// free slot still gets it (the component decides whether the request
    /// can still go out while it drains).
    pub(crate) fn close_waiters(&self) {
        self.closing.store(true, Ordering::Release);
        self.closed.notify_waiters();
    }

    /// The adapter ended: every waiting and later caller fails with
    /// [`Refusal::Closed`]; requests already admitted keep their slots.
    pub(crate) fn close(&self) {
        self.close_waiters();
        self.slots.close();
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
