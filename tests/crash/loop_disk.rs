//! An ext4 file system in an image file, loop-mounted (root needed), whose power can be cut.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long an unmount may stay busy after a kill.
const UNMOUNT_LIMIT: Duration = Duration::from_secs(10);
/// Size of the file system image the power-loss tests mount.
const IMAGE_SIZE_BYTES: u64 = 64 << 20;

/// An ext4 file system in an image file, loop-mounted on a fresh directory.
pub(crate) struct LoopDisk {
    image: PathBuf,
    pub(crate) mount_point: PathBuf,
    /// Mounts so far: they alternate the data journaling modes.
    mounts: std::cell::Cell<u64>,
}

impl LoopDisk {
    /// Makes and mounts the file system; `None` (after saying so) when this process cannot
    /// mount and the test is not required.
    pub(crate) fn create(parent: &Path) -> Option<LoopDisk> {
        Self::create_sized(parent, IMAGE_SIZE_BYTES)
    }

    /// The same with an image of `bytes`.
    pub(crate) fn create_sized(parent: &Path, bytes: u64) -> Option<LoopDisk> {
        let image = parent.join("disk.img");
        let mount_point = parent.join("disk");
        std::fs::create_dir(&mount_point).expect("mount point");
        std::fs::File::create(&image)
            .and_then(|file| file.set_len(bytes))
            .expect("image file");
        // Inode tables and journal initialised now, not by a kernel thread after the mount.
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&image)
            .output();
        let disk = LoopDisk {
            image,
            mount_point,
            mounts: std::cell::Cell::new(0),
        };
        let mounted = match made {
            Ok(output) if output.status.success() => disk.mount(),
            other => Err(format!("mkfs.ext4 failed: {other:?}")),
        };
        match mounted {
            Ok(()) => Some(disk),
            Err(why) => {
                let required =
                    std::env::var("HELIX_REQUIRE_ROOT_TESTS").is_ok_and(|value| value != "0");
                assert!(!required, "HELIX_REQUIRE_ROOT_TESTS is set but {why}");
                eprintln!("SKIPPED: power-loss test: {why}");
                None
            }
        }
    }

    fn mount(&self) -> Result<(), String> {
        let mounts = self.mounts.get();
        self.mounts.set(mounts + 1);
        // The journal commits on its own only every minute, so what a run writes without a
        // sync stays in the page cache; every other mount journals metadata only, which lets
        // a file's size or blocks reach the disk before its data.
        let data = if mounts % 2 == 0 {
            "data=ordered"
        } else {
            "data=writeback"
        };
        let output = Command::new("mount")
            .args(["-t", "ext4", "-o"])
            .arg(format!("loop,commit=60,{data}"))
            .arg(&self.image)
            .arg(&self.mount_point)
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "cannot loop-mount an ext4 image (root needed): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// The power cut: copies the image as its device holds it now, unmounts (whatever the
    /// unmount flushes goes to the discarded image), and mounts the copy in its place.
    pub(crate) fn cut_power(&self) {
        let copy = self.image.with_extension("cut");
        std::fs::copy(&self.image, &copy).expect("copy the image");
        self.unmount();
        std::fs::rename(&copy, &self.image).expect("replace the image");
        self.mount().expect("mount the image after the power cut");
    }

    /// Unmounts, waiting while the file system is busy: the kernel tears down a killed
    /// process's io_uring instance asynchronously, and until then it holds the process's files.
    fn unmount(&self) {
        let deadline = Instant::now() + UNMOUNT_LIMIT;
        loop {
            let output = Command::new("umount")
                .arg(&self.mount_point)
                .output()
                .expect("run umount");
            if output.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "umount failed for {UNMOUNT_LIMIT:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount_point).output();
    }
}
