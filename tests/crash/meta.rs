//! Meta-tests: the crash checks catch the bug they exist for. The bug here is the storage's (a
//! wrapper of the tests, below the log), not the log's, so nothing of the crate's `sabotage`
//! feature is needed; the module still sits behind that feature so that scripts/test.sh runs it
//! with the other meta-tests, in a step of their own.

use crate::crashes::{crash_repeatedly, Crash, DEFAULT_POWER_CUTS};

// Proves the power-loss check catches a writer whose storage skips its fsyncs (every file sync
// of the child returns `Ok` without syncing): such a writer loses acknowledged entries to the
// emulated power cuts (a process crash could not show it).
#[test]
fn power_loss_catches_a_writer_that_skips_fsync() {
    let caught = std::panic::catch_unwind(|| {
        crash_repeatedly("tokio", Crash::Power, DEFAULT_POWER_CUTS, true)
    });
    let panic = match caught {
        // The machine cannot mount (already said loudly, and allowed): nothing ran.
        Ok(tally) if tally.crashes == 0 => return,
        Ok(_) => {
            panic!("{DEFAULT_POWER_CUTS} power cuts did not catch a writer that never syncs")
        }
        Err(panic) => panic,
    };
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("lost") || message.contains("does not reopen"),
        "the sabotaged run failed for another reason: {message}"
    );
}
