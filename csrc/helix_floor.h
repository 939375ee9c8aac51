/*
 * helix_floor: the C-level floor of a durable append, for the benchmark.
 *
 * Each mode makes one block of data durable at a time, on one thread, as directly as the
 * machine allows: no Rust, no queue, no thread hand-off. Nothing can do the same work faster,
 * so the log's figures divided by these tell what the log and its backends cost.
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
};

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
 * latency of each in `latencies_ns` (room for `max_operations`). Returns 0, or a negative errno
 * (a short write counts as -EIO).
 */
int helix_floor_run(int32_t fd, uint32_t mode, uint32_t write_bytes, uint64_t file_bytes,
                    uint64_t duration_ns, uint64_t *latencies_ns, uint64_t max_operations,
                    struct helix_floor_result *out);

#endif /* HELIX_FLOOR_H */
