/*
 * helix_floor: the C-level floor of a durable append, for the benchmark.
 *
 * The raw modes make one block of data durable at a time, on one thread, as directly as the
 * machine allows: no Rust, no queue, no thread hand-off. Nothing can do the same work faster,
 * so the log's figures divided by these tell what the log and its backends cost.
 *
 * The shim modes do the same work through helix_uring (the backend's own C shim): once with
 * the ring loop on the calling thread (what the shim's bookkeeping costs over raw liburing),
 * and once the way the Rust backend uses it, with the ring loop on its own thread and the
 * submitting thread handing each request over and sleeping on an eventfd until it completes
 * (what the Rust path costs over the same design in C).
 *
 * Free of liburing types, like helix_uring.h, so that bindings do not depend on kernel headers.
 */
#ifndef HELIX_FLOOR_H
#define HELIX_FLOOR_H

#include <stdint.h>

enum helix_floor_mode {
    /* pwrite then fdatasync on a buffered descriptor. */
    HELIX_FLOOR_PWRITE_FDATASYNC = 1,
    /* io_uring: a write linked to an fdatasync, submitted and waited for on this thread. */
    HELIX_FLOOR_URING_LINKED = 2,
    /* pwrite on an O_DIRECT | O_DSYNC descriptor (durable when it returns). */
    HELIX_FLOOR_PWRITE_DIRECT = 3,
    /* io_uring: one write from a registered buffer on an O_DIRECT | O_DSYNC descriptor. */
    HELIX_FLOOR_URING_DIRECT = 4,
    /* helix_uring, ring loop on this thread: HELIX_OP_WRITE_FSYNC requests. */
    HELIX_FLOOR_SHIM_LINKED = 5,
    /* helix_uring, ring loop on this thread: HELIX_OP_WRITE on an O_DIRECT | O_DSYNC
     * descriptor. */
    HELIX_FLOOR_SHIM_DIRECT = 6,
    /* helix_uring on its own thread, requests handed over from this one: HELIX_OP_WRITE_FSYNC. */
    HELIX_FLOOR_SHIM_HANDOFF_LINKED = 7,
    /* helix_uring on its own thread, requests handed over from this one: HELIX_OP_WRITE on an
     * O_DIRECT | O_DSYNC descriptor. */
    HELIX_FLOOR_SHIM_HANDOFF_DIRECT = 8,
};

struct helix_ring_config;

/* What a run did. */
struct helix_floor_result {
    uint64_t operations;
    uint64_t elapsed_ns;
};

/*
 * Runs `mode` on the open file `fd` (opened with O_DIRECT | O_DSYNC for the direct modes, and
 * already `file_bytes` long, written and synced): writes `write_bytes` (a multiple of 4096 for
 * the direct modes) at consecutive offsets, wrapping around at `file_bytes`, each made durable
 * before the next, until `duration_ns` has passed or `max_operations` are done. Stores the
 * latency of each in `latencies_ns` (room for `max_operations`). The shim modes create their
 * ring from `ring_config` (ignored by the raw modes, which may pass NULL). Returns 0, or a
 * negative errno (a short write counts as -EIO).
 */
int helix_floor_run(int32_t fd, uint32_t mode, uint32_t write_bytes, uint64_t file_bytes,
                    uint64_t duration_ns, uint64_t *latencies_ns, uint64_t max_operations,
                    const struct helix_ring_config *ring_config,
                    struct helix_floor_result *out);

#endif /* HELIX_FLOOR_H */
