//! The io_uring storage backend (feature `io-uring`, Linux only).
mod sys;
