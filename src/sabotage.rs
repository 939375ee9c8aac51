//! Deliberate bugs in the log's own logic, for meta-tests: each flag breaks one durability rule
//! at the exact point in the log where it is kept, so the simulation checker can prove it
//! catches that bug.
//!
//! Only bugs of the log live here. Bugs at the storage boundary (a file sync that returns `Ok`
//! without syncing, a directory sync skipped, a failed fsync retried and its success taken as
//! durable) are not the log's to make: the meta-tests put them in a storage wrapper of the tests
//! (`StorageSabotage` in tests/common/instrumented.rs) below the log's own
//! [`CheckedStorage`](crate::CheckedStorage), and nothing in the crate knows of them.
//!
//! Only the `sabotage` cargo feature makes the flags settable; without it every check is a
//! constant `false` that the compiler removes. The flags are per thread: the simulation runs the
//! log on a current-thread tokio runtime, so a meta-test's flags reach every task of its log and
//! no test running in parallel on another thread.

/// One deliberate bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// The durable index advances when entries are written, before any sync covers them.
    AckBeforeFsync,
    /// Recovery keeps a torn record whose header survived (its checksum fails) instead of
    /// cutting the log before it.
    KeepTornTail,
    /// The operation of a dropped call is finished on disk by the next call, but what it
    /// changed is not applied to the log's memory (the state before cancel safety).
    SkipCancellationGuard,
    /// Recovery cuts its index before a torn or damaged record but does not seal the cut with
    /// a new segment, so the next append overwrites the old segment in place.
    LeaveCutUnsealed,
}

#[cfg(feature = "sabotage")]
mod flags {
    use std::cell::Cell;

    use super::Sabotage;

    thread_local! {
        static ACTIVE: Cell<Option<Sabotage>> = const { Cell::new(None) };
    }

    /// Turns `sabotage` on for this thread until the guard is dropped.
    pub fn enable(sabotage: Sabotage) -> Guard {
        ACTIVE.with(|active| active.set(Some(sabotage)));
        Guard(())
    }

    /// Turns the active sabotage off when dropped.
    #[derive(Debug)]
    pub struct Guard(());

    impl Drop for Guard {
        fn drop(&mut self) {
            ACTIVE.with(|active| active.set(None));
        }
    }

    pub(crate) fn is_on(sabotage: Sabotage) -> bool {
        ACTIVE.with(|active| active.get() == Some(sabotage))
    }
}

#[cfg(feature = "sabotage")]
pub use flags::{enable, Guard};

/// True when `sabotage` is active on this thread.
#[cfg(feature = "sabotage")]
pub(crate) fn is_on(sabotage: Sabotage) -> bool {
    flags::is_on(sabotage)
}

/// Always false: the crate is built without the `sabotage` feature.
#[cfg(not(feature = "sabotage"))]
#[inline(always)]
pub(crate) fn is_on(_sabotage: Sabotage) -> bool {
    false
}
