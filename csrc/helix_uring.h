/*
 * helix_uring: the C shim of helix-wal's io_uring storage backend.
 *
 * One `helix_ring` is an io_uring instance owned by one dedicated thread. That thread calls
 * `helix_ring_create` and then `helix_ring_run`, which loops: it takes requests from the
 * caller's submission queue (through `helix_ring_hooks`), prepares SQEs for a bounded batch,
 * submits them with one io_uring_enter, reaps every available CQE and hands finished requests
 * back through the hooks. When the queue is empty it sleeps in that same io_uring_enter until
 * a completion arrives (one syscall per round trip); other threads wake it with
 * `helix_ring_notify`, which writes an eventfd only when the ring thread has announced that it
 * is about to sleep.
 *
 * Every function that can fail returns 0 or a positive count on success and a negative errno
 * on failure. There is no global state: everything lives in the `helix_ring` object.
 *
 * This header is deliberately free of liburing types, so that bindings generated from it do not
 * depend on the kernel headers.
 */
#ifndef HELIX_URING_H
#define HELIX_URING_H

#include <stdint.h>

/* Request opcodes. */
enum helix_opcode {
    /* Write `len` bytes from `buf` at `offset`, continuing after short writes. */
    HELIX_OP_WRITE = 1,
    /* Read up to `len` bytes into `buf` at `offset`; stops early only at end of file. */
    HELIX_OP_READ = 2,
    /* fdatasync the file. */
    HELIX_OP_FSYNC = 3,
    /* Write all of `buf` then fdatasync, as a linked pair; succeeds only after an fsync that
     * covers the whole write. */
    HELIX_OP_WRITE_FSYNC = 4,
    /* Hold a reference to the open file `fd` in the ring's own file table (the caller may close
     * `fd` afterwards); `done` returns the slot. The kernel drops that reference only when the
     * slot is released or, once the ring is gone, after every request the ring had in flight
     * has finished: also when the process dies. A lock held through that open file (flock)
     * therefore outlives the process's last direct write. Completes at once, without an SQE. */
    HELIX_OP_HOLD_FILE = 5,
    /* Release the file held in slot `offset` (-EBADF if it holds none). Completes at once,
     * without an SQE, but the ring drops the file only once every request it started before
     * this one has finished (a write still in flight keeps its log's directory locked). The
     * kernel may put its reference a little later still (up to a second before Linux 6.4). */
    HELIX_OP_RELEASE_FILE = 6,
};

/* Slots of the ring's file table for HELIX_OP_HOLD_FILE (fewer when RLIMIT_NOFILE is lower). */
#define HELIX_MAX_HELD_FILES 1024

/*
 * One request. The memory belongs to the caller; it must stay valid and untouched from the
 * moment the request is handed over by `helix_ring_hooks.pop` until it is handed back by
 * `helix_ring_hooks.complete`, and so must `buf`.
 *
 * The caller fills in the fields above the line; the ring owns the fields below it.
 */
struct helix_request {
    uint64_t offset;
    uint64_t len;
    uint8_t *buf;
    int32_t fd;
    uint32_t opcode;
    /* The owner's own tag (e.g. a slot index); the ring never reads or changes it. */
    uint64_t user_data;
    /* ---- owned by the ring while the request is in flight ---- */
    /* Bytes transferred so far (reads and writes). */
    uint64_t done;
    /* Final result: 0 on success, negative errno on failure. */
    int32_t result;
    /* Internal state flags (HELIX_REQUEST_FLAG_*, private to the shim). */
    uint32_t flags;
    /* CQEs still outstanding for the current round. */
    uint32_t pending;
    /* Index of the registered buffer in use, or -1. */
    int32_t fixed_index;
    /* Length of the read or write SQE of the current round. */
    uint64_t round_len;
    /* Rounds submitted (continuations after short transfers and retries included). */
    uint32_t rounds;
};

/* Configuration of a ring. Zero in a field that has a default means "use the default". */
struct helix_ring_config {
    /* Submission queue entries (power of two; the kernel rounds up). */
    uint32_t sq_entries;
    /* Largest number of requests prepared and submitted together. */
    uint32_t max_batch;
    /* How long to keep gathering a batch while requests trickle in, in microseconds
     * (0: submit what is there at once). */
    uint32_t gather_window_us;
    /* Registered (fixed) buffers: count and size of each (0 count: none). */
    uint32_t registered_buffer_count;
    uint32_t registered_buffer_bytes;
    /* Upper bound of io-wq workers for bounded and unbounded work (0: kernel default). */
    uint32_t iowq_max_workers;
    /* Non-zero: try SQPOLL with this idle time in milliseconds first. */
    uint32_t sqpoll_idle_ms;
    /* When idle (nothing queued, nothing in flight), keep polling the queue for this many
     * microseconds before sleeping, so that a request queued meanwhile needs no wake-up
     * (0: sleep at once). */
    uint32_t idle_spin_us;
    /* Completion task-running mode to ask the kernel for (HELIX_TASKRUN_*; 0: the best it has). */
    uint32_t task_run;
};

/* Values of `helix_ring_config.task_run`. */
enum helix_task_run {
    /* SINGLE_ISSUER | DEFER_TASKRUN (6.1), else COOP_TASKRUN (5.19), else none. */
    HELIX_TASKRUN_BEST = 0,
    /* COOP_TASKRUN, else none. */
    HELIX_TASKRUN_COOP = 1,
    /* No task-running flag: completions run as the kernel pleases (interrupting the ring). */
    HELIX_TASKRUN_PLAIN = 2,
};

/* Callbacks into the owner of the submission queue. Called only on the ring thread. */
struct helix_ring_hooks {
    void *context;
    /* Takes the next queued request, or returns NULL when the queue is empty. */
    struct helix_request *(*pop)(void *context);
    /* Non-zero when the queue holds at least one request (used before sleeping). */
    int (*has_pending)(void *context);
    /* A request is finished (`result` and `done` are final) but still the ring's: called
     * before anything shows it finished (the counters, the release of a file it holds back,
     * `complete`), so that what the owner records here, such as a failed write's poisoning,
     * is visible to whoever sees the completion. NULL: nothing to settle. */
    void (*settle)(void *context, const struct helix_request *request);
    /* Hands a finished request back; `result` and `done` are final. Called after the request
     * was counted in `requests_completed`. */
    void (*complete)(void *context, struct helix_request *request);
};

/* Counters, readable from any thread at any time (each value is individually consistent).
 * A reader that sees a request counted in `requests_completed` also sees what `settle`
 * recorded for it. */
struct helix_ring_stats {
    uint64_t sqes_submitted;
    uint64_t enter_calls;
    uint64_t batches;
    uint64_t largest_batch;
    uint64_t gather_timeouts;
    uint64_t requests_started;
    uint64_t requests_completed;
    uint64_t in_flight;
    uint64_t fixed_buffer_hits;
    uint64_t fixed_buffer_misses;
    uint64_t short_transfers;
    uint64_t linked_fsyncs_cancelled;
    uint64_t sleeps;
    uint64_t wakeups_sent;
    /* Idle spins that found a request before their time ran out. */
    uint64_t spins_rewarded;
    /* fdatasync SQEs queued (linked to a write or alone). */
    uint64_t fsyncs_submitted;
    /* io_uring_setup flags the ring runs with. */
    uint32_t setup_flags;
    /* Registered buffers in the pool (0 when registration was refused or not asked for). */
    uint32_t registered_buffers;
    /* Error of buffer registration (negative errno) or 0. */
    int32_t registration_error;
    /* Slots for held files (0 when the kernel refused the file table), the error of that
     * refusal (negative errno, or 0), and the files held now. */
    uint32_t held_file_slots;
    int32_t held_files_error;
    uint64_t held_files;
    /* Of those, files released and waiting for the requests started before their release
     * (never more than `held_files` of the same snapshot). */
    uint64_t held_files_releasing;
    /* Largest number of requests this ring keeps in flight (CQ overflow bound). */
    uint32_t max_requests;
};

/* Setup flags reported in `helix_ring_stats.setup_flags` (same values as the kernel's). */
#define HELIX_SETUP_SQPOLL (1U << 1)
#define HELIX_SETUP_COOP_TASKRUN (1U << 8)
#define HELIX_SETUP_SINGLE_ISSUER (1U << 12)
#define HELIX_SETUP_DEFER_TASKRUN (1U << 13)

struct helix_ring;

/* Creates a ring; must be called on the thread that will call `helix_ring_run`. Fails with
 * -EOPNOTSUPP when the kernel lacks an opcode the ring needs (read, write, fsync: Linux 5.6). */
int helix_ring_create(const struct helix_ring_config *config, struct helix_ring **out);

/* Runs the loop until `helix_ring_request_stop` was called, the queue is empty and no request
 * is in flight. Returns 0, having dropped every held file (HELIX_OP_HOLD_FILE), or a negative
 * errno when the ring failed. A failed run completes nothing more: requests still queued or in
 * flight stay as they are, for the caller to fail (the kernel may still hold those in flight,
 * so their memory must not be reused), and held files stay held until the ring is destroyed. */
int helix_ring_run(struct helix_ring *ring, const struct helix_ring_hooks *hooks);

/* Thread safe: wakes the ring thread if it sleeps. Call after queueing a request. */
void helix_ring_notify(struct helix_ring *ring);

/* Thread safe: asks the loop to finish its work and return. */
void helix_ring_request_stop(struct helix_ring *ring);

/* Thread safe: copies the counters. */
void helix_ring_read_stats(const struct helix_ring *ring, struct helix_ring_stats *out);

/* Largest number of requests that may be handed to the ring at once. */
uint32_t helix_ring_max_requests(const struct helix_ring *ring);

#ifdef HELIX_TEST_HOOKS
/* Test hook, compiled only with HELIX_TEST_HOOKS defined (build.rs defines it for the crate's
 * test-only `test-support` feature; the shipped build has no such hook). Thread safe: when
 * `armed` is non-zero, the next write that crosses a page boundary of its file transfers, for
 * real, only the bytes up to that boundary: its source is placed so that the rest is
 * unreadable, the kernel faults there and reports a short write (cancelling a linked fsync).
 * Exercises the recovery from short writes. 0 disarms. */
void helix_ring_arm_short_write(struct helix_ring *ring, uint32_t armed);
#endif

/* Frees the ring. Only after `helix_ring_run` returned (or was never called). */
void helix_ring_destroy(struct helix_ring *ring);

#endif /* HELIX_URING_H */
