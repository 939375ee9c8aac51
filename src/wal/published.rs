//! `Published`: a value tasks wait on, the primitive group commit publishes durability through.

use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

/// A value tasks wait on. Like a tokio watch channel, but waiters are woken in the order they
/// began to wait: tokio's watch wakes its waiters through shards picked at random, which would
/// make a simulated run depend on more than its seed.
#[derive(Debug)]
pub(crate) struct Published<T> {
    value: Mutex<T>,
    pub(crate) changed: Notify,
}

impl<T: Clone> Published<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            value: Mutex::new(value),
            changed: Notify::new(),
        }
    }

    pub(crate) fn get(&self) -> T {
        self.value
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the value and wakes every waiter.
    pub(crate) fn modify(&self, change: impl FnOnce(&mut T)) {
        change(&mut self.value.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_waiters();
    }

    /// Waits until `ready` returns `Some` for the value, and returns that.
    pub(crate) async fn wait_for<R>(&self, mut ready: impl FnMut(&T) -> Option<R>) -> R {
        loop {
            // Registered before the check, so a change between the check and the wait is seen.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(result) = ready(&self.get()) {
                return result;
            }
            notified.await;
        }
    }
}
