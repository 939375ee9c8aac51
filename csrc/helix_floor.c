/*
 * helix_floor: raw durable-write loops, the floor the benchmark measures the log against.
 * See helix_floor.h. Small functions, errors as negative errno, no global state.
 */
#define _GNU_SOURCE
#include "helix_floor.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

/* Alignment of the data buffer: direct I/O transfers straight from these pages. */
#define FLOOR_BUFFER_ALIGNMENT 4096
/* Ring size: one linked write + fsync pair in flight. */
#define FLOOR_RING_ENTRIES 4

static uint64_t now_ns(void)
{
    struct timespec spec;
    clock_gettime(CLOCK_MONOTONIC, &spec);
    return (uint64_t)spec.tv_sec * 1000000000ULL + (uint64_t)spec.tv_nsec;
}

static int is_direct(uint32_t mode)
{
    return mode == HELIX_FLOOR_PWRITE_DIRECT || mode == HELIX_FLOOR_URING_DIRECT;
}

static int is_uring(uint32_t mode)
{
    return mode == HELIX_FLOOR_URING_LINKED || mode == HELIX_FLOOR_URING_DIRECT;
}

/* One durable pwrite (+ fdatasync unless the descriptor is O_DSYNC). */
static int durable_pwrite(int fd, const uint8_t *buffer, uint32_t length, uint64_t offset,
                          int needs_sync)
{
    ssize_t written = pwrite(fd, buffer, length, (off_t)offset);
    if (written < 0)
        return -errno;
    if ((uint32_t)written != length)
        return -EIO;
    if (needs_sync && fdatasync(fd) != 0)
        return -errno;
    return 0;
}

/* Waits for `count` completions and checks them: a write must be whole, an fsync must be 0. */
static int reap(struct io_uring *ring, unsigned count, uint32_t length)
{
    for (unsigned seen = 0; seen < count; seen++) {
        struct io_uring_cqe *cqe;
        int ret = io_uring_wait_cqe(ring, &cqe);
        if (ret < 0)
            return ret;
        int result = cqe->res;
        uint64_t tag = io_uring_cqe_get_data64(cqe);
        io_uring_cqe_seen(ring, cqe);
        if (result < 0)
            return result;
        if (tag == 0 && (uint32_t)result != length)
            return -EIO;
    }
    return 0;
}

/* One durable write through the ring: linked write + fdatasync, or one direct write. */
static int durable_uring_write(struct io_uring *ring, int fd, uint8_t *buffer, uint32_t length,
                               uint64_t offset, int direct)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (direct) {
        io_uring_prep_write_fixed(sqe, fd, buffer, length, offset, 0);
        io_uring_sqe_set_data64(sqe, 0);
    } else {
        io_uring_prep_write(sqe, fd, buffer, length, offset);
        io_uring_sqe_set_data64(sqe, 0);
        io_uring_sqe_set_flags(sqe, IOSQE_IO_LINK);
        sqe = io_uring_get_sqe(ring);
        io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
        io_uring_sqe_set_data64(sqe, 1);
    }
    unsigned count = direct ? 1 : 2;
    int ret = io_uring_submit_and_wait(ring, count);
    if (ret < 0)
        return ret;
    return reap(ring, count, length);
}

/* Sets up the ring of a io_uring mode; registers the buffer for direct writes. */
static int setup_ring(struct io_uring *ring, uint8_t *buffer, uint32_t length, int direct)
{
    int ret = io_uring_queue_init(FLOOR_RING_ENTRIES, ring, 0);
    if (ret < 0)
        return ret;
    if (!direct)
        return 0;
    struct iovec vector = {.iov_base = buffer, .iov_len = length};
    ret = io_uring_register_buffers(ring, &vector, 1);
    if (ret < 0)
        io_uring_queue_exit(ring);
    return ret;
}

static int check_arguments(uint32_t mode, uint32_t write_bytes, uint64_t file_bytes,
                           const uint64_t *latencies_ns, uint64_t max_operations,
                           const struct helix_floor_result *out)
{
    if (mode < HELIX_FLOOR_PWRITE_FDATASYNC || mode > HELIX_FLOOR_URING_DIRECT)
        return -EINVAL;
    if (write_bytes == 0 || file_bytes < write_bytes || !latencies_ns || max_operations == 0 ||
        !out)
        return -EINVAL;
    if (is_direct(mode) &&
        (write_bytes % FLOOR_BUFFER_ALIGNMENT != 0 || file_bytes % FLOOR_BUFFER_ALIGNMENT != 0))
        return -EINVAL;
    return 0;
}

/* The timed loop: one durable write after another, each timed. */
static int run_loop(int fd, uint32_t mode, struct io_uring *ring, uint8_t *buffer,
                    uint32_t length, uint64_t file_bytes, uint64_t duration_ns,
                    uint64_t *latencies_ns, uint64_t max_operations,
                    struct helix_floor_result *out)
{
    uint64_t slots = file_bytes / length;
    uint64_t started = now_ns();
    uint64_t done = 0;
    int ret = 0;
    while (done < max_operations) {
        uint64_t began = now_ns();
        if (began - started >= duration_ns)
            break;
        uint64_t offset = (done % slots) * length;
        if (is_uring(mode))
            ret = durable_uring_write(ring, fd, buffer, length, offset, is_direct(mode));
        else
            ret = durable_pwrite(fd, buffer, length, offset, !is_direct(mode));
        if (ret < 0)
            break;
        latencies_ns[done++] = now_ns() - began;
    }
    out->operations = done;
    out->elapsed_ns = now_ns() - started;
    return ret;
}

int helix_floor_run(int32_t fd, uint32_t mode, uint32_t write_bytes, uint64_t file_bytes,
                    uint64_t duration_ns, uint64_t *latencies_ns, uint64_t max_operations,
                    struct helix_floor_result *out)
{
    int ret = check_arguments(mode, write_bytes, file_bytes, latencies_ns, max_operations, out);
    if (ret < 0)
        return ret;
    void *memory = NULL;
    size_t size = (write_bytes + FLOOR_BUFFER_ALIGNMENT - 1) / FLOOR_BUFFER_ALIGNMENT *
                  FLOOR_BUFFER_ALIGNMENT;
    if (posix_memalign(&memory, FLOOR_BUFFER_ALIGNMENT, size) != 0)
        return -ENOMEM;
    uint8_t *buffer = memory;
    memset(buffer, 0xA5, size);
    struct io_uring ring;
    if (is_uring(mode)) {
        ret = setup_ring(&ring, buffer, (uint32_t)size, is_direct(mode));
        if (ret < 0) {
            free(memory);
            return ret;
        }
    }
    ret = run_loop(fd, mode, &ring, buffer, write_bytes, file_bytes, duration_ns, latencies_ns,
                   max_operations, out);
    if (is_uring(mode))
        io_uring_queue_exit(&ring);
    free(memory);
    return ret;
}
