//! The storage conformance suite: every backend must keep the contract written in the `Storage`
//! and `StorageFile` docs. Each case is generic over the harness and instantiated per backend.

mod common;

mod cases {
    use bytes::Bytes;
    use helix_wal::WalError;

    use crate::common::Harness;

    // Proves a write is read back byte for byte at its offset, and that a read past the end is
    // short rather than an error or zero-filled.
    pub async fn write_then_read_back(harness: Harness) {
        let storage = &harness.storage;
        storage.create_dir_all(&harness.dir).await.unwrap();
        let file = storage.open(&harness.dir.join("a")).await.unwrap();
        file.write_at(0, Bytes::from_static(b"hello world"))
            .await
            .unwrap();
        file.write_at(6, Bytes::from_static(b"WORLD"))
            .await
            .unwrap();
        assert_eq!(&file.read_at(0, 11).await.unwrap()[..], b"hello WORLD");
        assert_eq!(&file.read_at(6, 100).await.unwrap()[..], b"WORLD");
        assert!(file.read_at(11, 4).await.unwrap().is_empty());
        assert!(file.read_at(1000, 4).await.unwrap().is_empty());
        assert_eq!(file.size().await.unwrap(), 11);
    }

    // Proves writing past the end extends the file with zeros in the gap.
    pub async fn sparse_write_zero_fills_gap(harness: Harness) {
        let storage = &harness.storage;
        storage.create_dir_all(&harness.dir).await.unwrap();
        let file = storage.open(&harness.dir.join("a")).await.unwrap();
        file.write_at(8, Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(&file.read_at(0, 9).await.unwrap()[..], b"\0\0\0\0\0\0\0\0x");
    }

    // Proves set_len truncates and extends with zeros.
    pub async fn set_len_truncates_and_extends(harness: Harness) {
        let storage = &harness.storage;
        storage.create_dir_all(&harness.dir).await.unwrap();
        let file = storage.open(&harness.dir.join("a")).await.unwrap();
        file.write_at(0, Bytes::from_static(b"abcdef"))
            .await
            .unwrap();
        file.set_len(3).await.unwrap();
        assert_eq!(&file.read_at(0, 10).await.unwrap()[..], b"abc");
        file.set_len(5).await.unwrap();
        assert_eq!(&file.read_at(0, 10).await.unwrap()[..], b"abc\0\0");
        assert_eq!(file.size().await.unwrap(), 5);
    }

    // Proves write_at_and_sync writes the data (its durability is proven by the crash cases of
    // backends that can simulate power loss).
    pub async fn write_and_sync_writes(harness: Harness) {
        let storage = &harness.storage;
        storage.create_dir_all(&harness.dir).await.unwrap();
        let file = storage.open(&harness.dir.join("a")).await.unwrap();
        file.write_at_and_sync(4, Bytes::from_static(b"data"))
            .await
            .unwrap();
        file.sync().await.unwrap();
        assert_eq!(&file.read_at(4, 4).await.unwrap()[..], b"data");
    }

    // Proves reopening a file keeps its contents (open does not truncate) and that a synced
    // write survives a crash of the harness.
    pub async fn reopen_keeps_synced_contents(harness: Harness) {
        let storage = &harness.storage;
        storage.create_dir_all(&harness.dir).await.unwrap();
        let path = harness.dir.join("a");
        let file = storage.open(&path).await.unwrap();
        file.write_at_and_sync(0, Bytes::from_static(b"durable"))
            .await
            .unwrap();
        storage.sync_dir(&harness.dir).await.unwrap();
        // The directory itself was created by this test: its entry is durable only after a
        // sync of its parent.
        storage
            .sync_dir(harness.dir.parent().unwrap())
            .await
            .unwrap();
        drop(file);
        harness.crash().await;
        let file = harness.storage.open(&path).await.unwrap();
        assert_eq!(&file.read_at(0, 7).await.unwrap()[..], b"durable");
    }

    // Proves list returns full paths sorted by name, exists and is_dir tell files from
    // directories, and remove and rename do what they say.
    pub async fn directory_operations(harness: Harness) {
        let storage = &harness.storage;
        storage
            .create_dir_all(&harness.dir.join("sub"))
            .await
            .unwrap();
        for name in ["c", "a", "b"] {
            storage.open(&harness.dir.join(name)).await.unwrap();
        }
        let names: Vec<String> = storage
            .list(&harness.dir)
            .await
            .unwrap()
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a", "b", "c", "sub"]);
        assert!(storage.list(&harness.dir).await.unwrap()[0].starts_with(&harness.dir));
        assert!(storage.is_dir(&harness.dir.join("sub")).await.unwrap());
        assert!(!storage.is_dir(&harness.dir.join("a")).await.unwrap());
        assert!(!storage.is_dir(&harness.dir.join("missing")).await.unwrap());
        storage.remove(&harness.dir.join("a")).await.unwrap();
        assert!(!storage.exists(&harness.dir.join("a")).await.unwrap());
        storage
            .rename(&harness.dir.join("b"), &harness.dir.join("d"))
            .await
            .unwrap();
        assert!(!storage.exists(&harness.dir.join("b")).await.unwrap());
        assert!(storage.exists(&harness.dir.join("d")).await.unwrap());
        storage.sync_dir(&harness.dir).await.unwrap();
    }

    // Proves operations on missing paths fail with an Io error naming the path, not a panic.
    pub async fn missing_paths_are_errors(harness: Harness) {
        let storage = &harness.storage;
        let missing = harness.dir.join("nope");
        match storage.list(&missing).await {
            Err(WalError::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("expected an Io error, got {other:?}"),
        }
        assert!(storage.remove(&missing).await.is_err());
        assert!(!storage.exists(&missing).await.unwrap());
    }

    // Proves misuse of paths fails with the io::ErrorKind the OS gives, identically on every
    // backend: a path through a file, removing a directory, renaming a file over a directory,
    // creating a directory where a file is, listing a file, renaming a missing file.
    pub async fn error_kinds_match_the_os(harness: Harness) {
        use std::io::ErrorKind;
        let storage = &harness.storage;
        let dir = &harness.dir;
        storage.create_dir_all(&dir.join("sub")).await.unwrap();
        storage.open(&dir.join("file")).await.unwrap();
        let kind = |error: WalError| error.io_kind().expect("an Io error");
        let through_file = dir.join("file").join("x");
        assert_eq!(
            kind(storage.open(&through_file).await.unwrap_err()),
            ErrorKind::NotADirectory
        );
        assert_eq!(
            kind(storage.exists(&through_file).await.unwrap_err()),
            ErrorKind::NotADirectory
        );
        assert_eq!(
            kind(storage.list(&dir.join("file")).await.unwrap_err()),
            ErrorKind::NotADirectory
        );
        assert_eq!(
            kind(storage.open(&dir.join("sub")).await.unwrap_err()),
            ErrorKind::IsADirectory
        );
        assert_eq!(
            kind(storage.remove(&dir.join("sub")).await.unwrap_err()),
            ErrorKind::IsADirectory
        );
        let over_dir = storage.rename(&dir.join("file"), &dir.join("sub")).await;
        assert_eq!(kind(over_dir.unwrap_err()), ErrorKind::IsADirectory);
        let missing = storage
            .rename(&dir.join("missing"), &dir.join("other"))
            .await;
        assert_eq!(kind(missing.unwrap_err()), ErrorKind::NotFound);
        let into_missing = storage.open(&dir.join("missing").join("x")).await;
        assert_eq!(kind(into_missing.unwrap_err()), ErrorKind::NotFound);
        let over_file = storage.create_dir_all(&dir.join("file")).await;
        assert_eq!(kind(over_file.unwrap_err()), ErrorKind::AlreadyExists);
        assert_eq!(
            kind(storage.sync_dir(&dir.join("missing")).await.unwrap_err()),
            ErrorKind::NotFound
        );
    }

    // Proves opening a directory as a file is refused.
    pub async fn open_directory_is_refused(harness: Harness) {
        let storage = &harness.storage;
        storage
            .create_dir_all(&harness.dir.join("d"))
            .await
            .unwrap();
        assert!(storage.open(&harness.dir.join("d")).await.is_err());
    }

    // Proves many concurrent writers on many files each read back exactly their own data: no
    // completion is lost or delivered to the wrong caller.
    pub async fn concurrent_writers_do_not_mix(harness: Harness) {
        let storage = harness.storage.clone();
        storage.create_dir_all(&harness.dir).await.unwrap();
        let mut tasks = Vec::new();
        for file_number in 0..8u8 {
            let file = storage
                .open(&harness.dir.join(format!("f{file_number}")))
                .await
                .unwrap();
            for slot in 0..16u8 {
                let file = file.clone();
                tasks.push(tokio::spawn(async move {
                    let data = Bytes::from(vec![file_number ^ slot; 512]);
                    file.write_at(u64::from(slot) * 512, data).await.unwrap();
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
        for file_number in 0..8u8 {
            let file = storage
                .open(&harness.dir.join(format!("f{file_number}")))
                .await
                .unwrap();
            let contents = file.read_at(0, 16 * 512).await.unwrap();
            for slot in 0..16usize {
                let chunk = &contents[slot * 512..(slot + 1) * 512];
                assert!(chunk.iter().all(|byte| *byte == file_number ^ slot as u8));
            }
        }
    }

    // Proves open_read_only reads an existing file's contents.
    pub async fn open_read_only_reads(harness: Harness) {
        let storage = &harness.storage;
        storage.create_dir_all(&harness.dir).await.unwrap();
        let path = harness.dir.join("a");
        let file = storage.open(&path).await.unwrap();
        file.write_at_and_sync(0, Bytes::from_static(b"kept"))
            .await
            .unwrap();
        drop(file);
        let reader = storage.open_read_only(&path).await.unwrap();
        assert_eq!(&reader.read_at(0, 4).await.unwrap()[..], b"kept");
        assert_eq!(reader.size().await.unwrap(), 4);
    }

    // Proves a read allocation is bounded by the file, not by the requested length.
    pub async fn huge_read_is_bounded_by_file_size(harness: Harness) {
        let storage = &harness.storage;
        storage.create_dir_all(&harness.dir).await.unwrap();
        let file = storage.open(&harness.dir.join("a")).await.unwrap();
        file.write_at(0, Bytes::from_static(b"abc")).await.unwrap();
        let read = file.read_at(0, usize::MAX / 2).await.unwrap();
        assert_eq!(&read[..], b"abc");
    }
}

/// Every case, for [`for_each_backend!`] and for the extra backend below.
macro_rules! all_cases {
    ($instantiate:ident!($($prefix:tt)*)) => {
        $instantiate!($($prefix)* crate::cases;
            write_then_read_back,
            sparse_write_zero_fills_gap,
            set_len_truncates_and_extends,
            write_and_sync_writes,
            reopen_keeps_synced_contents,
            directory_operations,
            missing_paths_are_errors,
            open_directory_is_refused,
            error_kinds_match_the_os,
            concurrent_writers_do_not_mix,
            huge_read_is_bounded_by_file_size,
            open_read_only_reads
        );
    };
}

all_cases!(for_each_backend!());

// The simulator with calls left in flight keeps the contract for callers that await them.
all_cases!(backend_module!(
    simulated_in_flight_backend,
    Some(crate::common::Harness::simulated_in_flight()),
));
