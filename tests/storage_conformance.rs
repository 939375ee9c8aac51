//! The storage conformance suite on every backend of this crate: the cases live in the library
//! (`helix_wal::conformance`, feature `test-support`) so that a backend written elsewhere runs
//! the same ones. Direct-I/O configurations are included: their `open` must still take any write.

mod common;

mod cases {
    use helix_wal::conformance::{run_all, Target};

    use crate::common::Harness;

    // Proves the backend keeps every clause of the storage contract: runs every case of the
    // conformance suite on it, in a fresh directory of its own.
    pub async fn keeps_the_storage_contract(harness: Harness) {
        let storage = &harness.storage;
        storage.create_dir_all(&harness.dir).await.unwrap();
        storage
            .sync_dir(harness.dir.parent().unwrap())
            .await
            .unwrap();
        let mut target = Target::new(storage.clone(), harness.dir.clone());
        if let Some(simulated) = harness.simulated.clone() {
            target = target.with_crash(move || {
                simulated.crash();
            });
        }
        run_all(&target).await;
    }
}

for_each_log_backend!(crate::cases; keeps_the_storage_contract);

// The simulator with calls left in flight keeps the contract for callers that await them.
backend_module!(
    simulated_in_flight_backend,
    Some(crate::common::Harness::simulated_in_flight()),
    crate::cases;
    keeps_the_storage_contract
);
