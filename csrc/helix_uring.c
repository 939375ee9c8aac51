/*
 * helix_uring: see helix_uring.h for the contract.
 *
 * Request life cycle on the ring thread:
 *
 *   pop -> start_request -> prepare_round -> (SQEs) -> handle_cqe ... -> advance_request
 *       -> either finish_request (settle hook, counted, complete hook) or prepare_round again.
 *
 * A round is one read or write SQE, optionally followed by a linked fdatasync SQE. A short
 * or failed write breaks the link and the kernel completes the fsync with -ECANCELED; the next
 * round then writes the remainder with a fresh linked fsync. A request with an fsync succeeds
 * only when the round in which its last byte was written ended with a successful fsync CQE.
 */
#define _GNU_SOURCE
#include "helix_uring.h"

#include <errno.h>
#include <liburing.h>
#include <liburing/io_uring_version.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#ifdef HELIX_TEST_HOOKS
#include <sys/mman.h>
#endif
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* The low bits of an SQE's user_data say which SQE of a request completed; requests are
 * at least 8-byte aligned, so the bits are free. */
enum sqe_tag {
    TAG_WRITE = 0,
    TAG_READ = 1,
    TAG_FSYNC = 2,
    TAG_WAKE = 3,
    TAG_MASK = 3,
};

_Static_assert(_Alignof(struct helix_request) >= 4, "user_data tags need two free low bits");

enum request_flag {
    FLAG_FSYNC_OK = 1u << 0,
    FLAG_EOF = 1u << 1,
    /* Counted in a phase (see `struct held_files`), and which one. */
    FLAG_COUNTED = 1u << 2,
    FLAG_PHASE_ONE = 1u << 3,
};

/* States of a slot of the held-file table. */
enum held_slot {
    SLOT_FREE = 0,
    SLOT_HELD = 1,
    /* Released by its owner, dropped once the requests started before that are done. */
    SLOT_RELEASING = 2,
};

/* Defaults for zero config fields; the Rust side documents and validates the same values. */
#define DEFAULT_SQ_ENTRIES 256u
#define DEFAULT_MAX_BATCH 64u
/* One read or write SQE never asks for more than this; larger requests take several rounds.
 * (The kernel caps one transfer at about 2 GiB anyway.) */
#define MAX_TRANSFER_BYTES (1u << 30)
/* A request that needs more rounds than this fails with EIO: every round of a write either
 * moves bytes or was interrupted, so this only trips on a kernel that keeps refusing work. */
#define MAX_ROUNDS 4096u
/* CQEs reaped per peek. */
#define REAP_BATCH 64u
/* CQEs kept free for the eventfd read that wakes the ring. */
#define WAKE_CQES 1u

_Static_assert(IO_URING_VERSION_MAJOR == 2 && IO_URING_VERSION_MINOR >= 15,
               "helix_uring is written against liburing 2.15");

struct ring_counters {
    _Atomic uint64_t sqes_submitted;
    _Atomic uint64_t enter_calls;
    _Atomic uint64_t batches;
    _Atomic uint64_t largest_batch;
    _Atomic uint64_t gather_timeouts;
    _Atomic uint64_t requests_started;
    _Atomic uint64_t requests_completed;
    _Atomic uint64_t in_flight;
    _Atomic uint64_t fixed_buffer_hits;
    _Atomic uint64_t fixed_buffer_misses;
    _Atomic uint64_t spins_rewarded;
    _Atomic uint64_t short_transfers;
    _Atomic uint64_t linked_fsyncs_cancelled;
    _Atomic uint64_t sleeps;
    _Atomic uint64_t wakeups_sent;
    _Atomic uint64_t fsyncs_submitted;
};

/* The ring's file table, for held files (HELIX_OP_HOLD_FILE).
 *
 * A release must not drop a file while a request started before it is still in flight (a
 * write of the log whose lock it is may still land). So every request is counted in one of two
 * phases; a release flips the phase and its slot is dropped once the old phase has no request
 * left. Releases that arrive while one drain runs wait for the next drain.
 *
 * Only the ring thread touches the table. Other threads (helix_ring_read_stats) read only the
 * atomics `shown_slots`, `held` and `releasing`, and `error`, which is fixed at creation. The
 * ring thread lowers `releasing` before `held` and lowers `held` with release; the stats read
 * `held` with acquire and then `releasing`, so a drop never shows more files releasing than
 * held. Raising both is relaxed, so the stats clamp `releasing` to `held` as well. */
struct held_files {
    /* Size of the table (0 when there is none), and the same for other threads to read. */
    uint32_t slots;
    _Atomic uint32_t shown_slots;
    /* Per slot: enum held_slot. */
    uint8_t *in_use;
    int32_t *free_slots;
    uint32_t free_count;
    int32_t error;
    _Atomic uint64_t held;
    _Atomic uint64_t releasing;
    /* The phase new requests are counted in, and the requests in flight in each phase. */
    uint32_t phase;
    uint32_t phase_count[2];
    /* The phase being drained, or -1; the slots dropped when it is empty; and the slots
     * released meanwhile, for the next drain. */
    int32_t draining;
    int32_t *drain_slots;
    uint32_t drain_count;
    int32_t *next_slots;
    uint32_t next_count;
};

struct buffer_pool {
    uint8_t *memory;
    uint32_t count;
    uint32_t bytes;
    int32_t *free_indices;
    uint32_t free_count;
    int32_t registration_error;
};

/* Queue checks between two clock reads while spinning idle. */
#define SPIN_CHECKS_PER_CLOCK_READ 64

/* Tells the CPU this is a spin-wait loop (eases the sibling hyperthread, saves power). */
static inline void spin_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

struct helix_ring {
    struct io_uring uring;
    uint32_t setup_flags;
    uint32_t max_batch;
    uint32_t gather_window_us;
    uint32_t idle_spin_us;
    uint32_t max_requests;
    /* Requests between start_request and finish_request (ring thread only). */
    uint32_t in_flight;
    /* The eventfd other threads write to wake the ring, and the read armed on it. */
    int wake_fd;
    int wake_armed;
    uint64_t wake_value;
    _Atomic int sleeping;
    _Atomic int stop;
    struct buffer_pool pool;
    struct held_files held;
    size_t page_bytes;
#ifdef HELIX_TEST_HOOKS
    /* Test hook: the next write crossing a page boundary is cut short there (see
     * helix_ring_arm_short_write), its source being two pages, the second unreadable. */
    _Atomic int short_write_armed;
    uint8_t *trap;
#endif
    struct ring_counters counters;
};

static void bump(_Atomic uint64_t *counter, uint64_t amount)
{
    atomic_fetch_add_explicit(counter, amount, memory_order_relaxed);
}

static uint64_t read_counter(const _Atomic uint64_t *counter)
{
    return atomic_load_explicit(counter, memory_order_relaxed);
}

static uint64_t monotonic_us(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
}

/* ---------------------------------------------------------------------------------------- */
/* Setup                                                                                     */
/* ---------------------------------------------------------------------------------------- */

/* Tries one set of setup flags. */
static int try_setup(struct helix_ring *ring, uint32_t entries, uint32_t flags, uint32_t idle_ms)
{
    struct io_uring_params params;
    memset(&params, 0, sizeof(params));
    params.flags = flags;
    params.sq_thread_idle = idle_ms;
    int ret = io_uring_queue_init_params(entries, &ring->uring, &params);
    if (ret == 0) {
        ring->setup_flags = flags;
        uint32_t usable = params.cq_entries > WAKE_CQES ? params.cq_entries - WAKE_CQES : 0;
        /* A request has at most two CQEs outstanding (a linked write and fsync). */
        ring->max_requests = usable / 2;
    }
    return ret;
}

/* Creates the io_uring instance with the best flags the kernel accepts: SQPOLL if asked for,
 * else SINGLE_ISSUER|DEFER_TASKRUN (6.1), else COOP_TASKRUN (5.19), else none; `task_run`
 * may skip the first candidates. */
static int setup_uring(struct helix_ring *ring, const struct helix_ring_config *config)
{
    uint32_t entries = config->sq_entries ? config->sq_entries : DEFAULT_SQ_ENTRIES;
    if (config->sqpoll_idle_ms) {
        int ret = try_setup(ring, entries, IORING_SETUP_SQPOLL, config->sqpoll_idle_ms);
        /* Refused (EPERM before 5.13, EINVAL when unknown): run without it. */
        if (ret == 0 || (ret != -EPERM && ret != -EINVAL))
            return ret;
    }
    const uint32_t candidates[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    size_t first = config->task_run == HELIX_TASKRUN_COOP    ? 1
                   : config->task_run == HELIX_TASKRUN_PLAIN ? 2
                                                              : 0;
    int ret = -EINVAL;
    for (size_t i = first; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
        ret = try_setup(ring, entries, candidates[i], 0);
        /* EINVAL means "flag unknown to this kernel"; anything else will not improve. */
        if (ret != -EINVAL)
            return ret;
    }
    return ret;
}

/* Checks that the kernel supports every opcode the ring uses. */
static int check_opcodes(struct helix_ring *ring)
{
    static const int needed[] = {IORING_OP_READ, IORING_OP_WRITE, IORING_OP_FSYNC,
                                 IORING_OP_READ_FIXED, IORING_OP_WRITE_FIXED};
    struct io_uring_probe *probe = io_uring_get_probe_ring(&ring->uring);
    if (!probe)
        return -EOPNOTSUPP;
    int ret = 0;
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
        if (!io_uring_opcode_supported(probe, needed[i]))
            ret = -EOPNOTSUPP;
    }
    io_uring_free_probe(probe);
    return ret;
}

/* Allocates and registers the fixed-buffer pool. A refusal (RLIMIT_MEMLOCK: ENOMEM) is not
 * an error: the ring then uses plain reads and writes. */
static void register_pool(struct helix_ring *ring, const struct helix_ring_config *config)
{
    struct buffer_pool *pool = &ring->pool;
    pool->registration_error = 0;
    if (config->registered_buffer_count == 0 || config->registered_buffer_bytes == 0)
        return;
    size_t count = config->registered_buffer_count;
    size_t bytes = config->registered_buffer_bytes;
    void *memory = NULL;
    if (posix_memalign(&memory, ring->page_bytes, count * bytes) != 0) {
        pool->registration_error = -ENOMEM;
        return;
    }
    struct iovec *iovecs = calloc(count, sizeof(*iovecs));
    int32_t *free_indices = calloc(count, sizeof(*free_indices));
    if (!iovecs || !free_indices) {
        free(iovecs);
        free(free_indices);
        free(memory);
        pool->registration_error = -ENOMEM;
        return;
    }
    for (size_t i = 0; i < count; i++) {
        iovecs[i].iov_base = (uint8_t *)memory + i * bytes;
        iovecs[i].iov_len = bytes;
        free_indices[i] = (int32_t)(count - 1 - i);
    }
    int ret = io_uring_register_buffers(&ring->uring, iovecs, (unsigned)count);
    free(iovecs);
    if (ret < 0) {
        free(free_indices);
        free(memory);
        pool->registration_error = ret;
        return;
    }
    pool->memory = memory;
    pool->count = (uint32_t)count;
    pool->bytes = (uint32_t)bytes;
    pool->free_indices = free_indices;
    pool->free_count = (uint32_t)count;
}

/* Registers an empty file table for held files. A refusal (kernels before 5.19, a low
 * RLIMIT_NOFILE) is not an error: HELIX_OP_HOLD_FILE then fails with the refusal's errno. */
static void register_held_files(struct helix_ring *ring)
{
    struct held_files *held = &ring->held;
    held->draining = -1;
    uint32_t slots = HELIX_MAX_HELD_FILES;
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < slots)
        slots = (uint32_t)limit.rlim_cur;
    size_t entries = slots ? slots : 1;
    held->free_slots = calloc(entries, sizeof(*held->free_slots));
    held->in_use = calloc(entries, sizeof(*held->in_use));
    held->drain_slots = calloc(entries, sizeof(*held->drain_slots));
    held->next_slots = calloc(entries, sizeof(*held->next_slots));
    if (!held->free_slots || !held->in_use || !held->drain_slots || !held->next_slots) {
        held->error = -ENOMEM;
        return;
    }
    int ret = slots ? io_uring_register_files_sparse(&ring->uring, slots) : -EMFILE;
    if (ret < 0) {
        held->error = ret;
        return;
    }
    held->slots = slots;
    atomic_store_explicit(&held->shown_slots, slots, memory_order_relaxed);
    /* Lowest slot first. */
    for (uint32_t i = 0; i < slots; i++)
        held->free_slots[i] = (int32_t)(slots - 1 - i);
    held->free_count = slots;
}

/* Puts the request's file into a free slot of the table, returned in `done`. */
static int hold_file(struct helix_ring *ring, struct helix_request *request)
{
    struct held_files *held = &ring->held;
    if (held->slots == 0)
        return held->error ? held->error : -EOPNOTSUPP;
    if (held->free_count == 0)
        return -EMFILE;
    int32_t slot = held->free_slots[held->free_count - 1];
    int fd = request->fd;
    int ret = io_uring_register_files_update(&ring->uring, (unsigned)slot, &fd, 1);
    if (ret < 0)
        return ret;
    if (ret != 1)
        return -EIO;
    held->free_count--;
    held->in_use[slot] = SLOT_HELD;
    request->done = (uint64_t)slot;
    bump(&held->held, 1);
    return 0;
}

/* Drops the file of a released slot. Should the kernel refuse, the slot stays held (and
 * counted in the stats) until the ring is gone. */
static void drop_slot(struct helix_ring *ring, int32_t slot)
{
    struct held_files *held = &ring->held;
    int empty = -1;
    atomic_fetch_sub_explicit(&held->releasing, 1, memory_order_relaxed);
    if (io_uring_register_files_update(&ring->uring, (unsigned)slot, &empty, 1) < 0) {
        held->in_use[slot] = SLOT_HELD;
        return;
    }
    held->in_use[slot] = SLOT_FREE;
    held->free_slots[held->free_count++] = slot;
    /* Release: a reader that sees this drop sees `releasing` lowered already (above). */
    atomic_fetch_sub_explicit(&held->held, 1, memory_order_release);
}

/* Starts draining the current phase: requests from now on count in the other one. */
static void flip_phase(struct held_files *held)
{
    held->draining = (int32_t)held->phase;
    held->phase ^= 1u;
}

/* Drops the released slots whose drain is over, and starts the next drain. */
static void settle_releases(struct helix_ring *ring)
{
    struct held_files *held = &ring->held;
    while (held->draining >= 0 && held->phase_count[held->draining] == 0) {
        for (uint32_t i = 0; i < held->drain_count; i++)
            drop_slot(ring, held->drain_slots[i]);
        held->drain_count = 0;
        held->draining = -1;
        if (held->next_count > 0) {
            memcpy(held->drain_slots, held->next_slots,
                   held->next_count * sizeof(*held->next_slots));
            held->drain_count = held->next_count;
            held->next_count = 0;
            flip_phase(held);
        }
    }
}

/* Accepts the release of slot `offset`: its file is dropped once every request started
 * before this one has finished. */
static int release_file(struct helix_ring *ring, struct helix_request *request)
{
    struct held_files *held = &ring->held;
    if (request->offset >= held->slots || held->in_use[request->offset] != SLOT_HELD)
        return -EBADF;
    int32_t slot = (int32_t)request->offset;
    held->in_use[slot] = SLOT_RELEASING;
    bump(&held->releasing, 1);
    if (held->draining < 0) {
        held->drain_slots[held->drain_count++] = slot;
        flip_phase(held);
    } else {
        held->next_slots[held->next_count++] = slot;
    }
    settle_releases(ring);
    return 0;
}

/* Counts a request in the current phase (it holds back the releases that come after it). */
static void count_in_phase(struct helix_ring *ring, struct helix_request *request)
{
    request->flags |= FLAG_COUNTED | (ring->held.phase ? FLAG_PHASE_ONE : 0u);
    ring->held.phase_count[ring->held.phase]++;
}

static void uncount_from_phase(struct helix_ring *ring, const struct helix_request *request)
{
    if (request->flags & FLAG_COUNTED)
        ring->held.phase_count[(request->flags & FLAG_PHASE_ONE) ? 1 : 0]--;
}

/* Raises the io-wq worker limits: buffered writes and every fsync run on io-wq workers, and
 * the kernel's default allows few of them per ring on a small machine. Best effort. */
static void raise_iowq_workers(struct helix_ring *ring, uint32_t workers)
{
    if (workers == 0)
        return;
    unsigned int values[2] = {workers, workers};
    (void)io_uring_register_iowq_max_workers(&ring->uring, values);
}

#ifdef HELIX_TEST_HOOKS
/* Test hook: maps the two pages short writes are sourced from, the second unreadable. */
static int create_trap(struct helix_ring *ring)
{
    void *trap = mmap(NULL, 2 * ring->page_bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (trap == MAP_FAILED)
        return -errno;
    if (mprotect((uint8_t *)trap + ring->page_bytes, ring->page_bytes, PROT_NONE) != 0) {
        int error = -errno;
        munmap(trap, 2 * ring->page_bytes);
        return error;
    }
    ring->trap = trap;
    return 0;
}

static void release_trap(struct helix_ring *ring)
{
    if (ring->trap)
        munmap(ring->trap, 2 * ring->page_bytes);
}
#endif

static void release_resources(struct helix_ring *ring)
{
#ifdef HELIX_TEST_HOOKS
    release_trap(ring);
#endif
    if (ring->wake_fd >= 0)
        close(ring->wake_fd);
    free(ring->held.free_slots);
    free(ring->held.in_use);
    free(ring->held.drain_slots);
    free(ring->held.next_slots);
    free(ring->pool.free_indices);
    free(ring->pool.memory);
    free(ring);
}

int helix_ring_create(const struct helix_ring_config *config, struct helix_ring **out)
{
    struct helix_ring *ring = calloc(1, sizeof(*ring));
    if (!ring)
        return -ENOMEM;
    ring->wake_fd = -1;
    ring->page_bytes = (size_t)sysconf(_SC_PAGESIZE);
    ring->max_batch = config->max_batch ? config->max_batch : DEFAULT_MAX_BATCH;
    ring->gather_window_us = config->gather_window_us;
    ring->idle_spin_us = config->idle_spin_us;
    int ret = 0;
#ifdef HELIX_TEST_HOOKS
    ret = create_trap(ring);
#endif
    if (ret == 0) {
        /* Blocking on purpose: io_uring would complete a read of a non-blocking eventfd with
         * -EAGAIN instead of waiting for a write. */
        ring->wake_fd = eventfd(0, EFD_CLOEXEC);
        ret = ring->wake_fd < 0 ? -errno : 0;
    }
    if (ret == 0)
        ret = setup_uring(ring, config);
    if (ret < 0) {
        release_resources(ring);
        return ret;
    }
    ret = check_opcodes(ring);
    if (ret < 0) {
        io_uring_queue_exit(&ring->uring);
        release_resources(ring);
        return ret;
    }
    register_pool(ring, config);
    register_held_files(ring);
    raise_iowq_workers(ring, config->iowq_max_workers);
    *out = ring;
    return 0;
}

void helix_ring_destroy(struct helix_ring *ring)
{
    if (!ring)
        return;
    /* Exiting the ring cancels the armed eventfd read and unpins the registered buffers. */
    io_uring_queue_exit(&ring->uring);
    release_resources(ring);
}

/* ---------------------------------------------------------------------------------------- */
/* Thread-safe entry points                                                                  */
/* ---------------------------------------------------------------------------------------- */

static void write_wake(struct helix_ring *ring)
{
    uint64_t one = 1;
    ssize_t written;
    do {
        written = write(ring->wake_fd, &one, sizeof(one));
    } while (written < 0 && errno == EINTR);
    bump(&ring->counters.wakeups_sent, 1);
}

void helix_ring_notify(struct helix_ring *ring)
{
    /* Pairs with the fence in stay_awake: either the ring thread sees the queued request
     * before it sleeps, or this thread sees `sleeping` and writes the eventfd. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&ring->sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&ring->sleeping, 0, memory_order_acq_rel))
        write_wake(ring);
}

void helix_ring_request_stop(struct helix_ring *ring)
{
    atomic_store_explicit(&ring->stop, 1, memory_order_seq_cst);
    helix_ring_notify(ring);
}

#ifdef HELIX_TEST_HOOKS
void helix_ring_arm_short_write(struct helix_ring *ring, uint32_t armed)
{
    atomic_store_explicit(&ring->short_write_armed, armed != 0, memory_order_release);
}
#endif

uint32_t helix_ring_max_requests(const struct helix_ring *ring)
{
    return ring->max_requests;
}

void helix_ring_read_stats(const struct helix_ring *ring, struct helix_ring_stats *out)
{
    const struct ring_counters *c = &ring->counters;
    memset(out, 0, sizeof(*out));
    out->sqes_submitted = read_counter(&c->sqes_submitted);
    out->enter_calls = read_counter(&c->enter_calls);
    out->batches = read_counter(&c->batches);
    out->largest_batch = read_counter(&c->largest_batch);
    out->gather_timeouts = read_counter(&c->gather_timeouts);
    out->requests_started = read_counter(&c->requests_started);
    /* Acquire: pairs with the release in finish_request. */
    out->requests_completed =
        atomic_load_explicit(&c->requests_completed, memory_order_acquire);
    out->in_flight = read_counter(&c->in_flight);
    out->fixed_buffer_hits = read_counter(&c->fixed_buffer_hits);
    out->fixed_buffer_misses = read_counter(&c->fixed_buffer_misses);
    out->spins_rewarded = read_counter(&c->spins_rewarded);
    out->short_transfers = read_counter(&c->short_transfers);
    out->linked_fsyncs_cancelled = read_counter(&c->linked_fsyncs_cancelled);
    out->sleeps = read_counter(&c->sleeps);
    out->wakeups_sent = read_counter(&c->wakeups_sent);
    out->fsyncs_submitted = read_counter(&c->fsyncs_submitted);
    /* Fixed by helix_ring_create, before any other thread could reach the ring. */
    out->setup_flags = ring->setup_flags;
    out->registered_buffers = ring->pool.count;
    out->registration_error = ring->pool.registration_error;
    out->held_files_error = ring->held.error;
    out->max_requests = ring->max_requests;
    /* The held-file table belongs to the ring thread: only its atomics are read (see
     * `struct held_files`), `held` before `releasing`. */
    out->held_file_slots = atomic_load_explicit(&ring->held.shown_slots, memory_order_relaxed);
    out->held_files = atomic_load_explicit(&ring->held.held, memory_order_acquire);
    uint64_t releasing = read_counter(&ring->held.releasing);
    out->held_files_releasing = releasing < out->held_files ? releasing : out->held_files;
}

/* ---------------------------------------------------------------------------------------- */
/* Submission                                                                                */
/* ---------------------------------------------------------------------------------------- */

/* One io_uring_enter (through liburing): submits prepared SQEs and waits for `wait_nr`
 * completions. Retries EINTR. EAGAIN/EBUSY (resource shortage, CQ backlog) are returned as 0:
 * the caller reaps completions and submits again. */
static int submit(struct helix_ring *ring, unsigned wait_nr)
{
    for (;;) {
        int ret = io_uring_submit_and_wait(&ring->uring, wait_nr);
        bump(&ring->counters.enter_calls, 1);
        if (ret >= 0) {
            bump(&ring->counters.sqes_submitted, (uint64_t)ret);
            return 0;
        }
        if (ret == -EINTR)
            continue;
        if (ret == -EAGAIN || ret == -EBUSY) {
            sched_yield();
            return 0;
        }
        return ret;
    }
}

/* Makes room for `needed` SQEs, submitting what is prepared if the SQ is full. A linked pair
 * asks for both entries at once, because a link never spans two submits. */
static int reserve_sqes(struct helix_ring *ring, unsigned needed)
{
    while (io_uring_sq_space_left(&ring->uring) < needed) {
        int ret = submit(ring, 0);
        if (ret < 0)
            return ret;
        if (ring->setup_flags & IORING_SETUP_SQPOLL)
            io_uring_sqring_wait(&ring->uring);
    }
    return 0;
}

static void set_user_data(struct io_uring_sqe *sqe, struct helix_request *request, unsigned tag)
{
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)request | tag);
}

static uint8_t *pool_buffer(struct helix_ring *ring, const struct helix_request *request)
{
    return ring->pool.memory + (size_t)request->fixed_index * ring->pool.bytes;
}

#ifdef HELIX_TEST_HOOKS
/* Test hook: when armed and a write of `length` bytes at `position` crosses a page boundary of
 * the file, copies the bytes up to that boundary to the end of the trap's readable page and
 * returns where they start. The kernel then copies those bytes, faults on the unreadable page
 * and reports a genuine short write. NULL when the write goes ahead as asked. */
static const uint8_t *short_write_source(struct helix_ring *ring, const uint8_t *source,
                                         uint32_t length, uint64_t position)
{
    if (!atomic_load_explicit(&ring->short_write_armed, memory_order_acquire))
        return NULL;
    uint32_t to_boundary = (uint32_t)(ring->page_bytes - position % ring->page_bytes);
    if (to_boundary >= length)
        return NULL;
    atomic_store_explicit(&ring->short_write_armed, 0, memory_order_relaxed);
    uint8_t *start = ring->trap + ring->page_bytes - to_boundary;
    memcpy(start, source, to_boundary);
    return start;
}
#endif

/* Prepares the write SQE of a round: `length` bytes of `memory` at `position`. */
static void prep_write(struct helix_ring *ring, struct io_uring_sqe *sqe,
                       const struct helix_request *request, const uint8_t *memory,
                       uint32_t length, uint64_t position)
{
#ifdef HELIX_TEST_HOOKS
    const uint8_t *trap = short_write_source(ring, memory, length, position);
    if (trap) {
        io_uring_prep_write(sqe, request->fd, trap, length, position);
        return;
    }
#else
    (void)ring;
#endif
    if (request->fixed_index >= 0)
        io_uring_prep_write_fixed(sqe, request->fd, memory, length, position,
                                  request->fixed_index);
    else
        io_uring_prep_write(sqe, request->fd, memory, length, position);
}

/* Queues the read or write SQE of a round. Space must have been reserved. */
static void queue_transfer(struct helix_ring *ring, struct helix_request *request, unsigned tag,
                           int link)
{
    uint64_t remaining = request->len - request->done;
    uint32_t length = remaining > MAX_TRANSFER_BYTES ? MAX_TRANSFER_BYTES : (uint32_t)remaining;
    uint64_t position = request->offset + request->done;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->uring);
    int fixed = request->fixed_index >= 0;
    uint8_t *memory = (fixed ? pool_buffer(ring, request) : request->buf) + request->done;
    request->round_len = length;
    if (tag == TAG_WRITE) {
        prep_write(ring, sqe, request, memory, length, position);
    } else if (fixed) {
        io_uring_prep_read_fixed(sqe, request->fd, memory, length, position,
                                 request->fixed_index);
    } else {
        io_uring_prep_read(sqe, request->fd, memory, length, position);
    }
    set_user_data(sqe, request, tag);
    if (link)
        io_uring_sqe_set_flags(sqe, IOSQE_IO_LINK);
    request->pending++;
}

static void queue_fsync(struct helix_ring *ring, struct helix_request *request)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->uring);
    io_uring_prep_fsync(sqe, request->fd, IORING_FSYNC_DATASYNC);
    set_user_data(sqe, request, TAG_FSYNC);
    request->pending++;
    bump(&ring->counters.fsyncs_submitted, 1);
}

/* Queues a write, linked to an fsync when this round writes the last bytes. */
static void queue_write_and_fsync(struct helix_ring *ring, struct helix_request *request)
{
    if (request->done == request->len) {
        /* Every byte is written but no fsync covering them succeeded yet. */
        queue_fsync(ring, request);
        return;
    }
    int last_round = request->len - request->done <= MAX_TRANSFER_BYTES;
    queue_transfer(ring, request, TAG_WRITE, last_round);
    if (last_round)
        queue_fsync(ring, request);
}

static void finish_request(struct helix_ring *ring, const struct helix_ring_hooks *hooks,
                           struct helix_request *request);

/* Queues the SQEs of the next round of a request. */
static void prepare_round(struct helix_ring *ring, const struct helix_ring_hooks *hooks,
                          struct helix_request *request)
{
    if (request->rounds >= MAX_ROUNDS) {
        request->result = -EIO;
        finish_request(ring, hooks, request);
        return;
    }
    int ret = reserve_sqes(ring, 2);
    if (ret < 0) {
        request->result = ret;
        finish_request(ring, hooks, request);
        return;
    }
    request->rounds++;
    request->flags &= ~FLAG_FSYNC_OK;
    switch (request->opcode) {
    case HELIX_OP_WRITE:
        queue_transfer(ring, request, TAG_WRITE, 0);
        break;
    case HELIX_OP_READ:
        queue_transfer(ring, request, TAG_READ, 0);
        break;
    case HELIX_OP_FSYNC:
        queue_fsync(ring, request);
        break;
    case HELIX_OP_WRITE_FSYNC:
        queue_write_and_fsync(ring, request);
        break;
    default:
        request->result = -EINVAL;
        finish_request(ring, hooks, request);
        break;
    }
}

/* Takes a registered buffer for a read or write that fits in one, copying a write's data in. */
static void attach_fixed_buffer(struct helix_ring *ring, struct helix_request *request)
{
    struct buffer_pool *pool = &ring->pool;
    int transfers = request->opcode != HELIX_OP_FSYNC;
    if (!transfers || request->len == 0 || pool->count == 0)
        return;
    if (request->len > pool->bytes || pool->free_count == 0) {
        bump(&ring->counters.fixed_buffer_misses, 1);
        return;
    }
    request->fixed_index = pool->free_indices[--pool->free_count];
    if (request->opcode != HELIX_OP_READ)
        memcpy(pool_buffer(ring, request), request->buf, request->len);
    bump(&ring->counters.fixed_buffer_hits, 1);
}

static void detach_fixed_buffer(struct helix_ring *ring, struct helix_request *request)
{
    if (request->fixed_index < 0)
        return;
    if (request->opcode == HELIX_OP_READ && request->result == 0)
        memcpy(request->buf, pool_buffer(ring, request), request->done);
    ring->pool.free_indices[ring->pool.free_count++] = request->fixed_index;
    request->fixed_index = -1;
}

static void start_request(struct helix_ring *ring, const struct helix_ring_hooks *hooks,
                          struct helix_request *request)
{
    request->done = 0;
    request->result = 0;
    request->flags = 0;
    request->pending = 0;
    request->rounds = 0;
    request->round_len = 0;
    request->fixed_index = -1;
    ring->in_flight++;
    atomic_store_explicit(&ring->counters.in_flight, ring->in_flight, memory_order_relaxed);
    bump(&ring->counters.requests_started, 1);
    if (request->opcode == HELIX_OP_HOLD_FILE || request->opcode == HELIX_OP_RELEASE_FILE) {
        request->result = request->opcode == HELIX_OP_HOLD_FILE ? hold_file(ring, request)
                                                                 : release_file(ring, request);
        finish_request(ring, hooks, request);
        return;
    }
    count_in_phase(ring, request);
    int transfers = request->opcode == HELIX_OP_READ || request->opcode == HELIX_OP_WRITE;
    if (transfers && request->len == 0) {
        finish_request(ring, hooks, request);
        return;
    }
    attach_fixed_buffer(ring, request);
    prepare_round(ring, hooks, request);
}

static void finish_request(struct helix_ring *ring, const struct helix_ring_hooks *hooks,
                           struct helix_request *request)
{
    detach_fixed_buffer(ring, request);
    /* First, before the counters, a drained release or the owner can show it finished. */
    if (hooks->settle)
        hooks->settle(hooks->context, request);
    uncount_from_phase(ring, request);
    ring->in_flight--;
    atomic_store_explicit(&ring->counters.in_flight, ring->in_flight, memory_order_relaxed);
    /* Release: pairs with the acquire in helix_ring_read_stats, so a reader that sees this
     * completion counted sees what `settle` recorded. */
    atomic_fetch_add_explicit(&ring->counters.requests_completed, 1, memory_order_release);
    /* After this call the request belongs to its owner again: do not touch it. */
    hooks->complete(hooks->context, request);
}

/* ---------------------------------------------------------------------------------------- */
/* Completion                                                                                */
/* ---------------------------------------------------------------------------------------- */

static int is_retryable(int res)
{
    return res == -EAGAIN || res == -EINTR;
}

static void record_error(struct helix_request *request, int res)
{
    if (request->result == 0)
        request->result = res;
}

static void note_transfer(struct helix_ring *ring, struct helix_request *request, unsigned tag,
                          int res)
{
    if (is_retryable(res))
        return;
    if (res < 0) {
        record_error(request, res);
        return;
    }
    if ((uint64_t)res < request->round_len)
        bump(&ring->counters.short_transfers, 1);
    if (res == 0) {
        /* A read of nothing is the end of the file; a write of nothing would loop forever. */
        if (tag == TAG_READ)
            request->flags |= FLAG_EOF;
        else
            record_error(request, -EIO);
        return;
    }
    request->done += (uint64_t)res;
}

static void note_fsync(struct helix_ring *ring, struct helix_request *request, int res)
{
    if (res == 0) {
        request->flags |= FLAG_FSYNC_OK;
    } else if (res == -ECANCELED) {
        /* The linked write was short or failed; the next round writes the rest. */
        bump(&ring->counters.linked_fsyncs_cancelled, 1);
    } else if (!is_retryable(res)) {
        /* Never retried: after a failed fsync the kernel may have dropped the dirty pages. */
        record_error(request, res);
    }
}

/* Decides, once every CQE of a round is in, whether the request is finished. */
static void advance_request(struct helix_ring *ring, const struct helix_ring_hooks *hooks,
                            struct helix_request *request)
{
    int finished;
    if (request->result < 0) {
        finished = 1;
    } else {
        int all_transferred = request->done == request->len;
        int synced = (request->flags & FLAG_FSYNC_OK) != 0;
        switch (request->opcode) {
        case HELIX_OP_READ:
            finished = all_transferred || (request->flags & FLAG_EOF);
            break;
        case HELIX_OP_WRITE:
            finished = all_transferred;
            break;
        case HELIX_OP_FSYNC:
            finished = synced;
            break;
        default:
            finished = all_transferred && synced;
            break;
        }
    }
    if (finished)
        finish_request(ring, hooks, request);
    else
        prepare_round(ring, hooks, request);
}

static void handle_cqe(struct helix_ring *ring, const struct helix_ring_hooks *hooks,
                       uint64_t user_data, int res)
{
    unsigned tag = (unsigned)(user_data & TAG_MASK);
    if (tag == TAG_WAKE) {
        ring->wake_armed = 0;
        return;
    }
    struct helix_request *request = (struct helix_request *)(uintptr_t)(user_data & ~(uint64_t)TAG_MASK);
    request->pending--;
    if (tag == TAG_FSYNC)
        note_fsync(ring, request, res);
    else
        note_transfer(ring, request, tag, res);
    if (request->pending == 0)
        advance_request(ring, hooks, request);
}

/* Reaps every available CQE. Each batch is copied out and the CQ advanced before handling, so
 * that SQEs queued while handling (next rounds) never find the CQ holding stale entries. */
static void reap(struct helix_ring *ring, const struct helix_ring_hooks *hooks)
{
    struct io_uring_cqe *cqes[REAP_BATCH];
    uint64_t user_data[REAP_BATCH];
    int results[REAP_BATCH];
    for (;;) {
        unsigned count = io_uring_peek_batch_cqe(&ring->uring, cqes, REAP_BATCH);
        if (count == 0)
            return;
        for (unsigned i = 0; i < count; i++) {
            user_data[i] = cqes[i]->user_data;
            results[i] = cqes[i]->res;
        }
        io_uring_cq_advance(&ring->uring, count);
        for (unsigned i = 0; i < count; i++)
            handle_cqe(ring, hooks, user_data[i], results[i]);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* The loop                                                                                  */
/* ---------------------------------------------------------------------------------------- */

/* Keeps a read armed on the wake eventfd, so that a write to it ends a wait in io_uring_enter. */
static int arm_wake(struct helix_ring *ring)
{
    if (ring->wake_armed)
        return 0;
    int ret = reserve_sqes(ring, 1);
    if (ret < 0)
        return ret;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->uring);
    io_uring_prep_read(sqe, ring->wake_fd, &ring->wake_value, sizeof(ring->wake_value), 0);
    io_uring_sqe_set_data64(sqe, TAG_WAKE);
    ring->wake_armed = 1;
    return 0;
}

static int can_accept(const struct helix_ring *ring)
{
    return ring->in_flight < ring->max_requests;
}

/* Takes up to max_batch requests from the queue and prepares them. When the queue runs dry
 * before the batch is full, keeps looking for at most gather_window_us. */
static unsigned gather_batch(struct helix_ring *ring, const struct helix_ring_hooks *hooks)
{
    unsigned taken = 0;
    uint64_t deadline = 0;
    while (taken < ring->max_batch && can_accept(ring)) {
        struct helix_request *request = hooks->pop(hooks->context);
        if (request) {
            start_request(ring, hooks, request);
            taken++;
            continue;
        }
        if (taken == 0 || ring->gather_window_us == 0)
            break;
        uint64_t now = monotonic_us();
        if (deadline == 0) {
            deadline = now + ring->gather_window_us;
        } else if (now >= deadline) {
            bump(&ring->counters.gather_timeouts, 1);
            break;
        }
        /* Two vCPUs: let the producers run rather than spin against them. */
        sched_yield();
    }
    return taken;
}

static void note_batch(struct helix_ring *ring, unsigned taken)
{
    if (taken == 0)
        return;
    bump(&ring->counters.batches, 1);
    if (taken > read_counter(&ring->counters.largest_batch))
        atomic_store_explicit(&ring->counters.largest_batch, taken, memory_order_relaxed);
}

/* Announces the intent to sleep and returns non-zero if the ring must stay awake instead:
 * a request was queued meanwhile, or a stop was asked for with nothing left in flight. */
static int stay_awake(struct helix_ring *ring, const struct helix_ring_hooks *hooks)
{
    atomic_store_explicit(&ring->sleeping, 1, memory_order_relaxed);
    /* Pairs with the fence in helix_ring_notify (Dekker: store flag, fence, check queue). */
    atomic_thread_fence(memory_order_seq_cst);
    int stopping = atomic_load_explicit(&ring->stop, memory_order_relaxed) && ring->in_flight == 0;
    if ((can_accept(ring) && hooks->has_pending(hooks->context)) || stopping) {
        atomic_store_explicit(&ring->sleeping, 0, memory_order_relaxed);
        return 1;
    }
    return 0;
}

/* Idle with nothing in flight: polls the queue for at most idle_spin_us and returns non-zero
 * when a request arrived (or a stop was asked for) in that time. */
static int spin_for_work(struct helix_ring *ring, const struct helix_ring_hooks *hooks)
{
    if (ring->idle_spin_us == 0 || ring->in_flight != 0)
        return 0;
    uint64_t deadline = monotonic_us() + ring->idle_spin_us;
    do {
        for (int i = 0; i < SPIN_CHECKS_PER_CLOCK_READ; i++) {
            if (hooks->has_pending(hooks->context)) {
                bump(&ring->counters.spins_rewarded, 1);
                return 1;
            }
            if (atomic_load_explicit(&ring->stop, memory_order_relaxed))
                return 1;
            spin_pause();
        }
    } while (monotonic_us() < deadline);
    return 0;
}

static int finished(struct helix_ring *ring, const struct helix_ring_hooks *hooks)
{
    return atomic_load_explicit(&ring->stop, memory_order_seq_cst) && ring->in_flight == 0 &&
           !hooks->has_pending(hooks->context);
}

/* After a clean stop: drops every held file at once (nothing is in flight any more, so the
 * holding has done its work), so that releases nobody will process cannot keep them. Their
 * owners' own descriptors still hold whatever locks they hold. */
static void drop_held_files(struct helix_ring *ring)
{
    struct held_files *held = &ring->held;
    if (held->slots == 0)
        return;
    if (io_uring_unregister_files(&ring->uring) < 0)
        return;
    held->slots = 0;
    held->free_count = 0;
    held->drain_count = 0;
    held->next_count = 0;
    held->draining = -1;
    /* `releasing` first, then `held` with release, as in drop_slot. */
    atomic_store_explicit(&held->releasing, 0, memory_order_relaxed);
    atomic_store_explicit(&held->held, 0, memory_order_release);
    atomic_store_explicit(&held->shown_slots, 0, memory_order_relaxed);
}

int helix_ring_run(struct helix_ring *ring, const struct helix_ring_hooks *hooks)
{
    for (;;) {
        int ret = arm_wake(ring);
        if (ret < 0)
            return ret;
        unsigned taken = gather_batch(ring, hooks);
        note_batch(ring, taken);
        if (taken == 0 && finished(ring, hooks)) {
            drop_held_files(ring);
            return 0;
        }
        if (taken == 0 && spin_for_work(ring, hooks))
            continue;
        /* Nothing more to take: submit what was gathered and wait in the same enter, for a
         * completion or the wake-up (one syscall per round trip instead of two). */
        unsigned wait_nr = 0;
        if (!stay_awake(ring, hooks)) {
            wait_nr = 1;
            bump(&ring->counters.sleeps, 1);
        }
        ret = submit(ring, wait_nr);
        atomic_store_explicit(&ring->sleeping, 0, memory_order_relaxed);
        if (ret < 0)
            return ret;
        reap(ring, hooks);
        settle_releases(ring);
    }
}
