//! The one lock-poisoning policy of the workspace: a poisoned mutex is taken over.
//!
//! A mutex is poisoned when a thread panicked while holding it. Everything we guard with one is
//! either consistent after any single statement (counters, maps, connection tables) or a
//! SQLite connection whose open transaction rolls back when its guard drops, so the next user
//! may go on; refusing instead would turn one panic (already logged) into a dead server or client.

use std::sync::{Mutex, MutexGuard};

/// `lock()` that recovers from poisoning (see the module docs).
pub trait LockExt<T> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> LockExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_is_taken_over() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = std::sync::Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *m.locked() += 1;
        assert_eq!(*m.locked(), 2);
    }
}
