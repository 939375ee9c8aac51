/*
 * helix_floor: raw durable-write loops, the floor the benchmark measures the log against.
 * See helix_floor.h. Small functions, errors as negative errno, no global state.
 */
#define _GNU_SOURCE
#include "helix_floor.h"
#include "helix_uring.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/eventfd.h>
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
    return mode == HELIX_FLOOR_PWRITE_DIRECT || mode == HELIX_FLOOR_URING_DIRECT ||
           mode == HELIX_FLOOR_SHIM_DIRECT || mode == HELIX_FLOOR_SHIM_HANDOFF_DIRECT;
}

static int is_shim(uint32_t mode)
{
    return mode >= HELIX_FLOOR_SHIM_LINKED && mode <= HELIX_FLOOR_SHIM_HANDOFF_DIRECT;
}

static int is_handoff(uint32_t mode)
{
    return mode == HELIX_FLOOR_SHIM_HANDOFF_LINKED || mode == HELIX_FLOOR_SHIM_HANDOFF_DIRECT;
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
    if (mode < HELIX_FLOOR_PWRITE_FDATASYNC || mode > HELIX_FLOOR_SHIM_HANDOFF_DIRECT)
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
        /* At least one operation per run, so every run has figures. */
        if (done > 0 && began - started >= duration_ns)
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

/* ---------------------------------------------------------------------------------------- */
/* Through the shim                                                                          */
/* ---------------------------------------------------------------------------------------- */

/* One shim run: a single request, reused for every durable write. */
struct shim_run {
    struct helix_ring *ring;
    struct helix_request request;
    /* The request waiting for the ring thread to take it, or NULL. */
    _Atomic(struct helix_request *) queued;
    /* Hand-off: the submitting thread sleeps on it until the request completes; the ring
     * thread also posts it once after creating the ring. */
    int done_fd;
    /* Hand-off: the ring thread's result (creation, then the loop). */
    int ring_result;
    const struct helix_ring_config *config;
    /* The loop (inline: advanced by the completion hook). */
    uint64_t slots;
    uint64_t started_ns;
    /* When the last write finished (0 until then). */
    uint64_t finished_ns;
    uint64_t began_ns;
    uint64_t duration_ns;
    uint64_t *latencies_ns;
    uint64_t max_operations;
    uint64_t done;
    int error;
};

static struct helix_request *shim_pop(void *context)
{
    struct shim_run *run = context;
    return atomic_exchange_explicit(&run->queued, NULL, memory_order_acq_rel);
}

static int shim_has_pending(void *context)
{
    struct shim_run *run = context;
    return atomic_load_explicit(&run->queued, memory_order_acquire) != NULL;
}

/* The hooks of a run: its one-request queue, and `complete`. */
static struct helix_ring_hooks shim_hooks(struct shim_run *run,
                                          void (*complete)(void *, struct helix_request *))
{
    struct helix_ring_hooks hooks = {
        .context = run,
        .pop = shim_pop,
        .has_pending = shim_has_pending,
        /* Nothing to settle: these loops keep no state that a completion must update first. */
        .settle = NULL,
        .complete = complete,
    };
    return hooks;
}

/* Points the request at the next slot of the file and queues it. */
static void shim_queue_next(struct shim_run *run)
{
    run->request.offset = (run->done % run->slots) * run->request.len;
    run->began_ns = now_ns();
    atomic_store_explicit(&run->queued, &run->request, memory_order_release);
}

/* Checks a finished request: the whole write, made durable. */
static int shim_outcome(const struct helix_request *request)
{
    if (request->result < 0)
        return request->result;
    if (request->opcode == HELIX_OP_WRITE && request->done != request->len)
        return -EIO;
    return 0;
}

/* Inline: the completion hook runs the loop, queueing the next write or stopping the ring. */
static void shim_complete_inline(void *context, struct helix_request *request)
{
    struct shim_run *run = context;
    uint64_t now = now_ns();
    run->error = shim_outcome(request);
    if (run->error == 0)
        run->latencies_ns[run->done++] = now - run->began_ns;
    if (run->error < 0 || run->done >= run->max_operations ||
        now - run->started_ns >= run->duration_ns) {
        run->finished_ns = now;
        helix_ring_request_stop(run->ring);
        return;
    }
    shim_queue_next(run);
}

/* Hand-off: the completion hook wakes the submitting thread. */
static void shim_complete_handoff(void *context, struct helix_request *request)
{
    struct shim_run *run = context;
    (void)request;
    uint64_t one = 1;
    if (write(run->done_fd, &one, sizeof one) != (ssize_t)sizeof one)
        abort();
}

static int shim_wait(struct shim_run *run)
{
    uint64_t value;
    for (;;) {
        ssize_t got = read(run->done_fd, &value, sizeof value);
        if (got == (ssize_t)sizeof value)
            return 0;
        if (got < 0 && errno != EINTR)
            return -errno;
    }
}

static void *shim_ring_thread(void *argument)
{
    struct shim_run *run = argument;
    run->ring_result = helix_ring_create(run->config, &run->ring);
    uint64_t one = 1;
    if (write(run->done_fd, &one, sizeof one) != (ssize_t)sizeof one)
        abort();
    if (run->ring_result < 0)
        return NULL;
    struct helix_ring_hooks hooks = shim_hooks(run, shim_complete_handoff);
    run->ring_result = helix_ring_run(run->ring, &hooks);
    return NULL;
}

/* The submitting thread's loop: hand a write over, sleep until it is durable, repeat. */
static int shim_submit_loop(struct shim_run *run)
{
    /* At least one operation per run, so every run has figures. */
    while (run->done < run->max_operations &&
           (run->done == 0 || now_ns() - run->started_ns < run->duration_ns)) {
        shim_queue_next(run);
        helix_ring_notify(run->ring);
        int ret = shim_wait(run);
        if (ret < 0)
            return ret;
        ret = shim_outcome(&run->request);
        if (ret < 0)
            return ret;
        run->latencies_ns[run->done++] = now_ns() - run->began_ns;
    }
    return 0;
}

static int shim_run_handoff(struct shim_run *run)
{
    run->done_fd = eventfd(0, EFD_CLOEXEC);
    if (run->done_fd < 0)
        return -errno;
    pthread_t thread;
    int ret = -pthread_create(&thread, NULL, shim_ring_thread, run);
    if (ret == 0) {
        ret = shim_wait(run);
        if (ret == 0 && run->ring_result < 0)
            ret = run->ring_result;
        if (ret == 0) {
            run->started_ns = now_ns();
            ret = shim_submit_loop(run);
            run->finished_ns = now_ns();
        }
        if (run->ring)
            helix_ring_request_stop(run->ring);
        pthread_join(thread, NULL);
        if (ret == 0 && run->ring_result < 0)
            ret = run->ring_result;
    }
    if (run->ring)
        helix_ring_destroy(run->ring);
    close(run->done_fd);
    return ret;
}

static int shim_run_inline(struct shim_run *run)
{
    int ret = helix_ring_create(run->config, &run->ring);
    if (ret < 0)
        return ret;
    struct helix_ring_hooks hooks = shim_hooks(run, shim_complete_inline);
    run->started_ns = now_ns();
    shim_queue_next(run);
    ret = helix_ring_run(run->ring, &hooks);
    helix_ring_destroy(run->ring);
    return ret < 0 ? ret : run->error;
}

static int run_shim(int fd, uint32_t mode, uint8_t *buffer, uint32_t length, uint64_t file_bytes,
                    uint64_t duration_ns, uint64_t *latencies_ns, uint64_t max_operations,
                    const struct helix_ring_config *config, struct helix_floor_result *out)
{
    struct shim_run run = {
        .request = {
            .len = length,
            .buf = buffer,
            .fd = fd,
            .opcode = is_direct(mode) ? HELIX_OP_WRITE : HELIX_OP_WRITE_FSYNC,
        },
        .done_fd = -1,
        .config = config,
        .slots = file_bytes / length,
        .duration_ns = duration_ns,
        .latencies_ns = latencies_ns,
        .max_operations = max_operations,
    };
    atomic_init(&run.queued, NULL);
    int ret = is_handoff(mode) ? shim_run_handoff(&run) : shim_run_inline(&run);
    out->operations = run.done;
    out->elapsed_ns = run.finished_ns > run.started_ns ? run.finished_ns - run.started_ns : 0;
    return ret;
}

int helix_floor_run(int32_t fd, uint32_t mode, uint32_t write_bytes, uint64_t file_bytes,
                    uint64_t duration_ns, uint64_t *latencies_ns, uint64_t max_operations,
                    const struct helix_ring_config *ring_config,
                    struct helix_floor_result *out)
{
    int ret = check_arguments(mode, write_bytes, file_bytes, latencies_ns, max_operations, out);
    if (ret < 0)
        return ret;
    if (is_shim(mode) && !ring_config)
        return -EINVAL;
    void *memory = NULL;
    size_t size = (write_bytes + FLOOR_BUFFER_ALIGNMENT - 1) / FLOOR_BUFFER_ALIGNMENT *
                  FLOOR_BUFFER_ALIGNMENT;
    if (posix_memalign(&memory, FLOOR_BUFFER_ALIGNMENT, size) != 0)
        return -ENOMEM;
    uint8_t *buffer = memory;
    memset(buffer, 0xA5, size);
    if (is_shim(mode)) {
        ret = run_shim(fd, mode, buffer, write_bytes, file_bytes, duration_ns, latencies_ns,
                       max_operations, ring_config, out);
        free(memory);
        return ret;
    }
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
