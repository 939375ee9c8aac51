//! The OS errors the simulator returns, with the kinds (and, for the errors a log must react to
//! by number, the errnos) that a real file system returns.

use std::io;

#[cfg(unix)]
mod errno {
    // The same numbers on Linux and the BSDs (including macOS).
    pub(super) const EIO: i32 = 5;
    pub(super) const EBADF: i32 = 9;
    pub(super) const EFBIG: i32 = 27;
    pub(super) const ENOSPC: i32 = 28;
}

/// EIO: the device failed.
pub(super) fn input_output() -> io::Error {
    #[cfg(unix)]
    return io::Error::from_raw_os_error(errno::EIO);
    #[cfg(not(unix))]
    return io::Error::other("simulated input/output error");
}

/// ENOSPC: the device is full (`io::ErrorKind::StorageFull`).
pub(super) fn no_space() -> io::Error {
    #[cfg(unix)]
    return io::Error::from_raw_os_error(errno::ENOSPC);
    #[cfg(not(unix))]
    return io::Error::new(io::ErrorKind::StorageFull, "no space left on device");
}

/// EFBIG: past the largest simulated file size.
pub(super) fn file_too_large() -> io::Error {
    #[cfg(unix)]
    return io::Error::from_raw_os_error(errno::EFBIG);
    #[cfg(not(unix))]
    return io::Error::new(io::ErrorKind::FileTooLarge, "file too large");
}

/// EBADF: a write through a handle opened read-only.
pub(super) fn bad_descriptor() -> io::Error {
    #[cfg(unix)]
    return io::Error::from_raw_os_error(errno::EBADF);
    #[cfg(not(unix))]
    return io::Error::other("simulated bad file descriptor: the file was opened read-only");
}

/// A handle opened before a simulated crash.
pub(super) fn stale_handle() -> io::Error {
    io::Error::other("stale handle after simulated crash: reopen the file")
}

pub(super) fn not_found() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no such file or directory")
}

pub(super) fn is_a_directory() -> io::Error {
    io::Error::new(io::ErrorKind::IsADirectory, "is a directory")
}

pub(super) fn not_a_directory() -> io::Error {
    io::Error::new(io::ErrorKind::NotADirectory, "not a directory")
}

pub(super) fn already_exists() -> io::Error {
    io::Error::new(io::ErrorKind::AlreadyExists, "file exists")
}

pub(super) fn directory_not_empty() -> io::Error {
    io::Error::new(io::ErrorKind::DirectoryNotEmpty, "directory not empty")
}

pub(super) fn invalid_input(reason: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, reason)
}
