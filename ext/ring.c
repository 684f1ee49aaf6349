/* aspen._ring: a single-producer single-consumer ring of variable-size messages in POSIX shared
 * memory, shared by the I/O process and the Raft worker process (one ring per direction).
 *
 * Theory of operation
 * -------------------
 * Segment = one shm object: a 4 KiB header page, then `capacity_bytes` of data.
 *
 *   line 0  magic, version, data_offset, capacity_bytes, max_message_size, attach_count
 *   line 1  head, put_count        written only by the producer
 *   line 2  tail, get_count        written only by the consumer
 *   line 3  consumer_waiting       "I may be asleep on the data eventfd"
 *   line 4  producer_waiting       "I may be asleep on the space eventfd"
 *
 * Each group sits on its own 64-byte cache line so the producer and consumer never write the same
 * line (false sharing would bounce it between cores on every message).
 *
 * head and tail are monotonic 64-bit byte counters (they never wrap in practice: 2^64 bytes at
 * 10 GB/s is 58 years); the position in the buffer is counter % capacity. used = head - tail.
 *
 * A record is an 8-byte header (uint32 length, uint32 length ^ RECORD_TAG) followed by the payload,
 * padded to 8 bytes. Every position is a multiple of 8 and capacity is a multiple of 8, so a header
 * never straddles the end of the buffer. A payload that does not fit before the end is *split*:
 * the first part fills the buffer to its end, the rest continues at offset 0 (two memcpy). We chose
 * split copy over a wrap marker because a marker wastes the tail of the buffer, so a message close
 * to the capacity could never fit even in an empty ring; with split copy any record of at most
 * `capacity_bytes` fits as soon as that many bytes are free. The tag catches a corrupted header
 * before we trust its length (DESIGN.md: fail loudly, never corrupt inside).
 *
 * Memory ordering. The producer writes the record, then publishes head; the consumer loads head,
 * reads the record, then publishes tail. Loads of the peer's counter are acquire, stores of our own
 * counter are seq_cst (which includes release).
 *
 * Sleep/wake (never lose a wake-up, signal only when the peer may sleep). Consumer about to sleep:
 *   store(consumer_waiting, 1, seq_cst); if load(head, seq_cst) != tail: don't sleep; else poll().
 * Producer after publishing:
 *   store(head, seq_cst); if load(consumer_waiting, seq_cst) && exchange(consumer_waiting, 0): signal.
 * This is Dekker's pattern: in the single total order of seq_cst operations, either the consumer's
 * re-check sees the new head, or the producer's check sees the flag; both may happen (a spurious
 * wake-up, harmless: the consumer drains the eventfd and re-checks). The producer-waits-for-space
 * direction is the mirror image with tail and producer_waiting. The atomics must be lock-free to be
 * shared between processes (checked below).
 *
 * Zero copy: when the capacity is a multiple of the page size, the data area is mapped twice back
 * to back (map_ring), so a split record is contiguous in our address space; peek() exports it as
 * a read-only memoryview and consume() refuses to free it while any view is alive.
 *
 * The eventfds belong to the Python wrapper (aspen/ring.py); this module only writes 1 to them.
 *
 * Every entry point validates its arguments and raises; nothing here aborts. Misuse within one
 * process (two threads putting at once, closing while a copy runs) is refused with UsageError.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* "ASPRING1" read as a little-endian uint64: identifies an Aspen ring segment. */
#define RING_MAGIC UINT64_C(0x31474E4952505341)
/* Bumped whenever the layout above changes; both processes run the same build, but a stale
 * segment from an older build must be refused, not misread. */
#define RING_VERSION 1u
/* x86-64 and arm64 cache lines are 64 bytes. */
#define CACHE_LINE_SIZE 64
/* The data starts on its own page so the header never shares a page with payload. */
#define RING_DATA_OFFSET 4096u
#define RECORD_HEADER_SIZE 8u
#define RECORD_ALIGN 8u
/* XORed with the length in the second header word; any other value means a corrupted header. */
#define RECORD_TAG UINT32_C(0x52454331)
/* Smallest data area: one header plus 8 payload bytes (the Python wrapper asks for more). */
#define MIN_CAPACITY_SIZE 16u
/* Largest data area we will map: 1 TiB is far beyond any sane ring; it bounds the arithmetic. */
#define MAX_CAPACITY_SIZE (UINT64_C(1) << 40)
/* Below this many bytes a memcpy is faster than releasing and re-taking the GIL (~0.1 us);
 * at 64 KiB the copy takes ~5 us, so releasing lets the other thread run. */
#define GIL_RELEASE_MIN_SIZE (64u * 1024u)
/* Longest shm name: NAME_MAX of the /dev/shm file name plus the leading '/'. */
#define MAX_NAME_SIZE 256

#if ATOMIC_LLONG_LOCK_FREE != 2 || ATOMIC_INT_LOCK_FREE != 2
#error "the ring needs lock-free (address-free) atomics to share them between processes"
#endif

struct ring_header {
    alignas(CACHE_LINE_SIZE) _Atomic uint64_t magic;
    uint32_t version;
    uint32_t data_offset;
    uint64_t capacity_bytes;
    uint64_t max_message_size;
    _Atomic uint64_t attach_count;
    alignas(CACHE_LINE_SIZE) _Atomic uint64_t head;
    _Atomic uint64_t put_count;
    alignas(CACHE_LINE_SIZE) _Atomic uint64_t tail;
    _Atomic uint64_t get_count;
    alignas(CACHE_LINE_SIZE) _Atomic uint32_t consumer_waiting;
    alignas(CACHE_LINE_SIZE) _Atomic uint32_t producer_waiting;
};

_Static_assert(sizeof(struct ring_header) <= RING_DATA_OFFSET, "header must fit before the data");
_Static_assert(offsetof(struct ring_header, head) % CACHE_LINE_SIZE == 0, "head on its own line");
_Static_assert(offsetof(struct ring_header, tail) % CACHE_LINE_SIZE == 0, "tail on its own line");
_Static_assert(offsetof(struct ring_header, tail) - offsetof(struct ring_header, head)
                   >= CACHE_LINE_SIZE, "head and tail on different lines");

/* Exceptions from aspen.errors (so callers catch one tree), plus our own corruption error. */
static PyObject *UsageError;
static PyObject *LimitExceeded;
static PyObject *RingCorrupted;

typedef struct {
    PyObject_HEAD
    struct ring_header *hdr; /* NULL once unmapped */
    unsigned char *data;
    size_t map_size_bytes;
    uint64_t capacity_bytes;
    uint64_t max_message_size;
    uint64_t cached_tail;  /* producer's last view of tail: refreshed only when space looks short */
    uint64_t cached_head;  /* consumer's last view of head: refreshed only when the ring looks empty */
    uint64_t wake_error_count;
    int shm_fd;            /* owned; -1 when none */
    int data_fd;           /* not owned (the wrapper's eventfd); -1 = no signalling */
    int space_fd;
    int busy;              /* operations that released the GIL and are still running */
    int exports;           /* live buffer exports (views from peek()); unmapping waits for 0 */
    int mirrored;          /* the data area is mapped twice back to back (see map_ring) */
    int putting;
    int getting;
    int closed;
} SegmentObject;

static PyTypeObject SegmentType;

/* ---- helpers ----------------------------------------------------------------------------- */

static uint64_t pad8(uint64_t n) { return (n + (RECORD_ALIGN - 1)) & ~(uint64_t)(RECORD_ALIGN - 1); }

static uint64_t record_size(uint64_t payload_size) { return RECORD_HEADER_SIZE + pad8(payload_size); }

static PyObject *raise_limit(const char *name, uint64_t value, uint64_t limit)
{
    PyObject *exc = PyObject_CallFunction(LimitExceeded, "sKK", name, (unsigned long long)value,
                                          (unsigned long long)limit);
    if (exc != NULL) {
        PyErr_SetObject(LimitExceeded, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *raise_corrupted(const char *what, uint64_t a, uint64_t b)
{
    PyErr_Format(RingCorrupted, "ring corrupted: %s (%llu, %llu)", what, (unsigned long long)a,
                 (unsigned long long)b);
    return NULL;
}

static int check_name(PyObject *name_obj, const char **out)
{
    Py_ssize_t size = 0;
    const char *name = PyUnicode_AsUTF8AndSize(name_obj, &size);
    if (name == NULL)
        return -1;
    if (size < 2 || size >= MAX_NAME_SIZE || name[0] != '/' || strchr(name + 1, '/') != NULL ||
        (Py_ssize_t)strlen(name) != size) {
        PyErr_Format(UsageError,
                     "ring name must be '/' followed by 1..%d characters without '/' or NUL, got %R",
                     MAX_NAME_SIZE - 2, name_obj);
        return -1;
    }
    *out = name;
    return 0;
}

static void signal_fd(SegmentObject *self, int fd)
{
    if (fd < 0)
        return;
    uint64_t one = 1;
    ssize_t written;
    do {
        written = write(fd, &one, sizeof one);
    } while (written < 0 && errno == EINTR);
    /* EAGAIN means the counter is saturated, so the fd is already readable: nothing is lost.
     * Anything else cannot be raised: the message is already published, and an exception would
     * make the caller retry and duplicate it. Count it for metrics instead. */
    if (written < 0 && errno != EAGAIN)
        self->wake_error_count++;
}

static void unmap(SegmentObject *self)
{
    if (self->hdr != NULL) {
        munmap((void *)self->hdr, self->map_size_bytes);
        self->hdr = NULL;
        self->data = NULL;
    }
    if (self->shm_fd >= 0) {
        close(self->shm_fd);
        self->shm_fd = -1;
    }
}

/* Enter an operation: refuse a closed segment and a second concurrent producer/consumer. */
static int enter_op(SegmentObject *self, int *role_flag, const char *role)
{
    if (self->closed || self->hdr == NULL) {
        PyErr_SetString(UsageError, "ring is closed");
        return -1;
    }
    if (*role_flag) {
        PyErr_Format(UsageError, "ring is single-%s: another %s call is in progress", role, role);
        return -1;
    }
    *role_flag = 1;
    self->busy++;
    return 0;
}

static void exit_op(SegmentObject *self, int *role_flag)
{
    *role_flag = 0;
    self->busy--;
    if (self->closed && self->busy == 0 && self->exports == 0)
        unmap(self); /* close() arrived while we copied without the GIL: finish it now */
}

/* Map the header and data of `fd`. When the capacity is a whole number of pages, the data is
 * mapped a second time right after the first (the "magic ring buffer" trick): the same physical
 * pages at two consecutive virtual ranges, so every record, even one split at the end of the
 * buffer, is contiguous in our address space and peek() can hand it out without copying. */
static int map_ring(SegmentObject *self, int fd, uint64_t capacity)
{
    long page_size = sysconf(_SC_PAGESIZE);
    int mirrored = page_size > 0 && capacity % (uint64_t)page_size == 0;
    size_t file_size = (size_t)(RING_DATA_OFFSET + capacity);
    size_t total_size = file_size + (mirrored ? (size_t)capacity : 0);
    /* Reserve the whole range first so the two file mappings land back to back. */
    unsigned char *base = mmap(NULL, total_size, PROT_NONE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        return -1;
    if (mmap(base, file_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED ||
        (mirrored && mmap(base + file_size, (size_t)capacity, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_FIXED, fd, RING_DATA_OFFSET) == MAP_FAILED)) {
        int saved_errno = errno;
        munmap(base, total_size);
        errno = saved_errno;
        return -1;
    }
    self->hdr = (struct ring_header *)base;
    self->data = base + RING_DATA_OFFSET;
    self->map_size_bytes = total_size;
    self->mirrored = mirrored;
    return 0;
}

/* Copy `size` bytes into the ring at byte counter `pos`, splitting at the end of the buffer. */
static void copy_in(SegmentObject *self, uint64_t pos, const unsigned char *src, uint64_t size)
{
    uint64_t off = pos % self->capacity_bytes;
    if (self->mirrored) { /* the mirror makes the wrap-around contiguous */
        memcpy(self->data + off, src, (size_t)size);
        return;
    }
    uint64_t first = self->capacity_bytes - off;
    if (first > size)
        first = size;
    memcpy(self->data + off, src, (size_t)first);
    if (size > first)
        memcpy(self->data, src + first, (size_t)(size - first));
}

static void copy_out(SegmentObject *self, uint64_t pos, unsigned char *dst, uint64_t size)
{
    uint64_t off = pos % self->capacity_bytes;
    if (self->mirrored) { /* the mirror makes the wrap-around contiguous */
        memcpy(dst, self->data + off, (size_t)size);
        return;
    }
    uint64_t first = self->capacity_bytes - off;
    if (first > size)
        first = size;
    memcpy(dst, self->data + off, (size_t)first);
    if (size > first)
        memcpy(dst + first, self->data, (size_t)(size - first));
}

/* Write one record at *head if it fits. 1 = written (*head advanced), 0 = full, -1 = error. */
static int put_record(SegmentObject *self, const unsigned char *src, uint64_t size, uint64_t *head)
{
    uint64_t need = record_size(size);
    uint64_t cap = self->capacity_bytes;
    uint64_t used = *head - self->cached_tail;
    if (used > cap || cap - used < need) {
        self->cached_tail = atomic_load_explicit(&self->hdr->tail, memory_order_acquire);
        used = *head - self->cached_tail;
        if (used > cap) {
            raise_corrupted("tail is ahead of head or behind by more than the capacity", *head,
                            self->cached_tail);
            return -1;
        }
        if (cap - used < need)
            return 0;
    }
    uint32_t words[2] = {(uint32_t)size, (uint32_t)size ^ RECORD_TAG};
    memcpy(self->data + (*head % cap), words, sizeof words);
    if (size >= GIL_RELEASE_MIN_SIZE) {
        Py_BEGIN_ALLOW_THREADS
        copy_in(self, *head + RECORD_HEADER_SIZE, src, size);
        Py_END_ALLOW_THREADS
    } else {
        copy_in(self, *head + RECORD_HEADER_SIZE, src, size);
    }
    *head += need;
    return 1;
}

/* Publish the producer's progress and wake the consumer only if it may be asleep. */
static void publish_head(SegmentObject *self, uint64_t head, uint64_t count)
{
    struct ring_header *h = self->hdr;
    atomic_store_explicit(&h->put_count,
                          atomic_load_explicit(&h->put_count, memory_order_relaxed) + count,
                          memory_order_relaxed);
    atomic_store_explicit(&h->head, head, memory_order_seq_cst);
    if (atomic_load_explicit(&h->consumer_waiting, memory_order_seq_cst) &&
        atomic_exchange_explicit(&h->consumer_waiting, 0, memory_order_seq_cst))
        signal_fd(self, self->data_fd);
}

static void publish_tail(SegmentObject *self, uint64_t tail, uint64_t count)
{
    struct ring_header *h = self->hdr;
    atomic_store_explicit(&h->get_count,
                          atomic_load_explicit(&h->get_count, memory_order_relaxed) + count,
                          memory_order_relaxed);
    atomic_store_explicit(&h->tail, tail, memory_order_seq_cst);
    if (atomic_load_explicit(&h->producer_waiting, memory_order_seq_cst) &&
        atomic_exchange_explicit(&h->producer_waiting, 0, memory_order_seq_cst))
        signal_fd(self, self->space_fd);
}

/* Validate the header of the record at `tail`. 1 = *size set, 0 = empty, -1 = error. */
static int read_header(SegmentObject *self, uint64_t tail, uint64_t *size)
{
    uint64_t cap = self->capacity_bytes;
    uint64_t avail = self->cached_head - tail;
    /* Reload when the cache says empty, and also when it is behind tail: another object (an
     * earlier consumer of this ring) moved tail past what we cached. */
    if (avail == 0 || avail > cap) {
        self->cached_head = atomic_load_explicit(&self->hdr->head, memory_order_acquire);
        avail = self->cached_head - tail;
        if (avail == 0)
            return 0;
    }
    if (avail > cap || avail < RECORD_HEADER_SIZE) {
        raise_corrupted("head is behind tail or ahead by more than the capacity", self->cached_head,
                        tail);
        return -1;
    }
    uint32_t words[2];
    memcpy(words, self->data + (tail % cap), sizeof words);
    if ((words[0] ^ RECORD_TAG) != words[1]) {
        raise_corrupted("bad record tag", words[0], words[1]);
        return -1;
    }
    if (words[0] > self->max_message_size || record_size(words[0]) > avail) {
        raise_corrupted("record length exceeds the limit or the published bytes", words[0], avail);
        return -1;
    }
    *size = words[0];
    return 1;
}

/* Read one record at *tail. 1 = *out set (*tail advanced), 0 = empty, -1 = error. */
static int get_record(SegmentObject *self, uint64_t *tail, PyObject **out)
{
    uint64_t size = 0;
    int rc = read_header(self, *tail, &size);
    if (rc != 1)
        return rc;
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (bytes == NULL)
        return -1;
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(bytes);
    if (size >= GIL_RELEASE_MIN_SIZE) {
        Py_BEGIN_ALLOW_THREADS
        copy_out(self, *tail + RECORD_HEADER_SIZE, dst, size);
        Py_END_ALLOW_THREADS
    } else {
        copy_out(self, *tail + RECORD_HEADER_SIZE, dst, size);
    }
    *tail += record_size(size);
    *out = bytes;
    return 1;
}

/* ---- Segment methods --------------------------------------------------------------------- */

PyDoc_STRVAR(try_put_doc,
"try_put(data, /) -> bool\n\n"
"Copy one bytes-like message into the ring. False if there is not enough free space (nothing\n"
"written); raises LimitExceeded if it is larger than max_message_size.");

static PyObject *Segment_try_put(SegmentObject *self, PyObject *arg)
{
    if (enter_op(self, &self->putting, "producer") < 0)
        return NULL;
    PyObject *result = NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        goto done;
    if ((uint64_t)view.len > self->max_message_size) {
        raise_limit("max_message_size", (uint64_t)view.len, self->max_message_size);
    } else {
        uint64_t head = atomic_load_explicit(&self->hdr->head, memory_order_relaxed);
        int rc = put_record(self, view.buf, (uint64_t)view.len, &head);
        if (rc == 1)
            publish_head(self, head, 1);
        if (rc >= 0)
            result = PyBool_FromLong(rc);
    }
    PyBuffer_Release(&view);
done:
    exit_op(self, &self->putting);
    return result;
}

PyDoc_STRVAR(try_put_many_doc,
"try_put_many(items, /) -> int\n\n"
"Copy a list/tuple of bytes-like messages in order, as many as fit; return how many were\n"
"written (the rest must be retried). Head is published and the consumer woken once per call.\n"
"Every size is checked first: if one is too large, LimitExceeded is raised and nothing is written.");

static PyObject *Segment_try_put_many(SegmentObject *self, PyObject *arg)
{
    /* Only a list or tuple: an iterator would be consumed, and the unwritten rest lost. */
    if (!PyList_Check(arg) && !PyTuple_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "try_put_many() needs a list or tuple, got %.100s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    PyObject *seq = PySequence_Fast(arg, "try_put_many() needs a list or tuple");
    if (seq == NULL)
        return NULL;
    if (enter_op(self, &self->putting, "producer") < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_buffer view;
    for (Py_ssize_t i = 0; i < n; i++) { /* validate every size before writing anything */
        if (PyBytes_CheckExact(items[i])) {
            view.len = PyBytes_GET_SIZE(items[i]);
        } else {
            if (PyObject_GetBuffer(items[i], &view, PyBUF_SIMPLE) < 0)
                goto done;
            PyBuffer_Release(&view);
        }
        if ((uint64_t)view.len > self->max_message_size) {
            raise_limit("max_message_size", (uint64_t)view.len, self->max_message_size);
            goto done;
        }
    }
    uint64_t head = atomic_load_explicit(&self->hdr->head, memory_order_relaxed);
    Py_ssize_t written = 0;
    int rc = 1;
    for (; written < n; written++) {
        if (PyObject_GetBuffer(items[written], &view, PyBUF_SIMPLE) < 0) {
            rc = -1;
            break;
        }
        rc = put_record(self, view.buf, (uint64_t)view.len, &head);
        PyBuffer_Release(&view);
        if (rc != 1)
            break;
    }
    if (written > 0)
        publish_head(self, head, (uint64_t)written); /* even on error: what was written stays */
    if (rc >= 0)
        result = PyLong_FromSsize_t(written);
done:
    exit_op(self, &self->putting);
    Py_DECREF(seq);
    return result;
}

PyDoc_STRVAR(try_get_doc,
"try_get() -> bytes | None\n\nTake the oldest message, or None if the ring is empty.");

static PyObject *Segment_try_get(SegmentObject *self, PyObject *Py_UNUSED(ignored))
{
    if (enter_op(self, &self->getting, "consumer") < 0)
        return NULL;
    PyObject *out = NULL;
    uint64_t tail = atomic_load_explicit(&self->hdr->tail, memory_order_relaxed);
    int rc = get_record(self, &tail, &out);
    if (rc == 1)
        publish_tail(self, tail, 1);
    else if (rc == 0)
        out = Py_NewRef(Py_None);
    exit_op(self, &self->getting);
    return out;
}

PyDoc_STRVAR(try_get_many_doc,
"try_get_many(max_count, /) -> list[bytes]\n\n"
"Take up to max_count (>= 1) of the oldest messages; an empty list if the ring is empty.\n"
"Tail is published and the producer woken once per call.");

static PyObject *Segment_try_get_many(SegmentObject *self, PyObject *arg)
{
    Py_ssize_t max_count = PyLong_AsSsize_t(arg);
    if (max_count == -1 && PyErr_Occurred())
        return NULL;
    if (max_count < 1) {
        PyErr_Format(UsageError, "max_count must be >= 1, got %zd", max_count);
        return NULL;
    }
    if (enter_op(self, &self->getting, "consumer") < 0)
        return NULL;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        goto done;
    uint64_t tail = atomic_load_explicit(&self->hdr->tail, memory_order_relaxed);
    Py_ssize_t count = 0;
    int rc = 1;
    while (count < max_count) {
        PyObject *item = NULL;
        rc = get_record(self, &tail, &item);
        if (rc != 1)
            break;
        int appended = PyList_Append(list, item);
        Py_DECREF(item);
        count++; /* taken from the ring even if the append failed: it is gone either way */
        if (appended < 0) {
            rc = -1;
            break;
        }
    }
    if (count > 0)
        publish_tail(self, tail, (uint64_t)count);
    if (rc < 0)
        Py_CLEAR(list);
done:
    exit_op(self, &self->getting);
    return list;
}

PyDoc_STRVAR(peek_doc,
"peek() -> memoryview | None\n\n"
"A read-only view of the oldest message without taking it (None if empty). On a page-aligned\n"
"ring it points into shared memory (no copy); otherwise a split record is copied. Release the\n"
"view (view.release() or `with view:`) before consume(); close() waits for views to go.");

static PyObject *Segment_peek(SegmentObject *self, PyObject *Py_UNUSED(ignored))
{
    if (enter_op(self, &self->getting, "consumer") < 0)
        return NULL;
    PyObject *result = NULL;
    uint64_t tail = atomic_load_explicit(&self->hdr->tail, memory_order_relaxed);
    uint64_t size = 0;
    int rc = read_header(self, tail, &size);
    if (rc == 0) {
        result = Py_NewRef(Py_None);
    } else if (rc == 1) {
        uint64_t start = (tail + RECORD_HEADER_SIZE) % self->capacity_bytes;
        if (self->mirrored || start + size <= self->capacity_bytes) {
            /* A slice of a view of the whole data area: it keeps our export alive until the
             * caller releases it, which keeps the mapping alive too. */
            PyObject *whole = PyMemoryView_FromObject((PyObject *)self);
            PyObject *first = PyLong_FromUnsignedLongLong(start);
            PyObject *last = PyLong_FromUnsignedLongLong(start + size);
            PyObject *slice = (first && last) ? PySlice_New(first, last, NULL) : NULL;
            if (whole != NULL && slice != NULL)
                result = PyObject_GetItem(whole, slice);
            Py_XDECREF(slice);
            Py_XDECREF(first);
            Py_XDECREF(last);
            Py_XDECREF(whole);
        } else {
            PyObject *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
            if (bytes != NULL) {
                copy_out(self, tail + RECORD_HEADER_SIZE, (unsigned char *)PyBytes_AS_STRING(bytes),
                         size);
                result = PyMemoryView_FromObject(bytes);
                Py_DECREF(bytes);
            }
        }
    }
    exit_op(self, &self->getting);
    return result;
}

PyDoc_STRVAR(consume_doc,
"consume() -> None\n\n"
"Take the message peek() showed. Raises UsageError if the ring is empty or a view into the\n"
"ring is still held (the producer would overwrite what it shows).");

static PyObject *Segment_consume(SegmentObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->exports > 0 && !self->closed) {
        PyErr_Format(UsageError, "release the view from peek() before consume() (%d held)",
                     self->exports);
        return NULL;
    }
    if (enter_op(self, &self->getting, "consumer") < 0)
        return NULL;
    PyObject *result = NULL;
    uint64_t tail = atomic_load_explicit(&self->hdr->tail, memory_order_relaxed);
    uint64_t size = 0;
    int rc = read_header(self, tail, &size);
    if (rc == 0) {
        PyErr_SetString(UsageError, "consume() on an empty ring");
    } else if (rc == 1) {
        publish_tail(self, tail + record_size(size), 1);
        result = Py_NewRef(Py_None);
    }
    exit_op(self, &self->getting);
    return result;
}

static int Segment_getbuffer(SegmentObject *self, Py_buffer *view, int flags)
{
    if (self->closed || self->hdr == NULL) {
        view->obj = NULL;
        PyErr_SetString(UsageError, "ring is closed");
        return -1;
    }
    Py_ssize_t size = (Py_ssize_t)(self->capacity_bytes * (self->mirrored ? 2 : 1));
    /* Read-only: only the producer writes the data area, and only through try_put. */
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->data, size, 1, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void Segment_releasebuffer(SegmentObject *self, Py_buffer *Py_UNUSED(view))
{
    self->exports--;
    if (self->closed && self->busy == 0 && self->exports == 0)
        unmap(self); /* close() came while a view was held */
}

static PyBufferProcs Segment_as_buffer = {
    .bf_getbuffer = (getbufferproc)Segment_getbuffer,
    .bf_releasebuffer = (releasebufferproc)Segment_releasebuffer,
};

PyDoc_STRVAR(arm_get_wait_doc,
"arm_get_wait() -> bool\n\n"
"Consumer about to sleep: announce it (the producer will then signal data_fd), and re-check.\n"
"True means a message is already there: do not sleep.");

static PyObject *Segment_arm_get_wait(SegmentObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->closed || self->hdr == NULL) {
        PyErr_SetString(UsageError, "ring is closed");
        return NULL;
    }
    struct ring_header *h = self->hdr;
    atomic_store_explicit(&h->consumer_waiting, 1, memory_order_seq_cst);
    uint64_t head = atomic_load_explicit(&h->head, memory_order_seq_cst);
    uint64_t tail = atomic_load_explicit(&h->tail, memory_order_relaxed);
    if (head != tail) {
        atomic_store_explicit(&h->consumer_waiting, 0, memory_order_relaxed);
        Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

PyDoc_STRVAR(arm_put_wait_doc,
"arm_put_wait(size_bytes, /) -> bool\n\n"
"Producer about to sleep for space: announce it (the consumer will then signal space_fd), and\n"
"re-check. True means a message of size_bytes fits now: do not sleep.");

static PyObject *Segment_arm_put_wait(SegmentObject *self, PyObject *arg)
{
    unsigned long long size = PyLong_AsUnsignedLongLong(arg);
    if (size == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (self->closed || self->hdr == NULL) {
        PyErr_SetString(UsageError, "ring is closed");
        return NULL;
    }
    if (size > self->max_message_size)
        return raise_limit("max_message_size", size, self->max_message_size);
    struct ring_header *h = self->hdr;
    atomic_store_explicit(&h->producer_waiting, 1, memory_order_seq_cst);
    uint64_t tail = atomic_load_explicit(&h->tail, memory_order_seq_cst);
    uint64_t head = atomic_load_explicit(&h->head, memory_order_relaxed);
    uint64_t used = head - tail;
    if (used > self->capacity_bytes)
        return raise_corrupted("tail is ahead of head or behind by more than the capacity", head,
                               tail);
    if (self->capacity_bytes - used >= record_size(size)) {
        atomic_store_explicit(&h->producer_waiting, 0, memory_order_relaxed);
        Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

static int check_wake_fd(int fd)
{
    struct stat st;
    if (fd < -1) {
        PyErr_Format(UsageError, "a wake-up fd must be >= 0 (or -1 for none), got %d", fd);
        return -1;
    }
    if (fd >= 0 && fstat(fd, &st) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(set_wake_fds_doc,
"set_wake_fds(data_fd, space_fd, /) -> None\n\n"
"The eventfds this side writes to: data_fd after publishing messages (producer), space_fd after\n"
"freeing space (consumer). -1 disables that signal. The fds stay owned by the caller.");

static PyObject *Segment_set_wake_fds(SegmentObject *self, PyObject *args)
{
    int data_fd, space_fd;
    if (!PyArg_ParseTuple(args, "ii:set_wake_fds", &data_fd, &space_fd))
        return NULL;
    if (check_wake_fd(data_fd) < 0 || check_wake_fd(space_fd) < 0)
        return NULL;
    self->data_fd = data_fd;
    self->space_fd = space_fd;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(close_doc,
"close() -> None\n\nUnmap the segment and close the owned shm fd. Idempotent. Does not unlink.");

static PyObject *Segment_close(SegmentObject *self, PyObject *Py_UNUSED(ignored))
{
    self->closed = 1;
    if (self->busy == 0 && self->exports == 0)
        unmap(self); /* otherwise the last operation or view release unmaps */
    Py_RETURN_NONE;
}

PyDoc_STRVAR(close_shm_fd_doc,
"close_shm_fd() -> None\n\nClose the shm fd kept for passing to a child; the mapping stays.");

static PyObject *Segment_close_shm_fd(SegmentObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->shm_fd >= 0) {
        close(self->shm_fd);
        self->shm_fd = -1;
    }
    Py_RETURN_NONE;
}

static PyObject *require_open(SegmentObject *self)
{
    if (self->closed || self->hdr == NULL) {
        PyErr_SetString(UsageError, "ring is closed");
        return NULL;
    }
    return Py_None; /* borrowed marker: non-NULL means open */
}

static PyObject *Segment_get_depth_bytes(SegmentObject *self, void *Py_UNUSED(closure))
{
    if (require_open(self) == NULL)
        return NULL;
    uint64_t tail = atomic_load_explicit(&self->hdr->tail, memory_order_acquire);
    uint64_t head = atomic_load_explicit(&self->hdr->head, memory_order_acquire);
    return PyLong_FromUnsignedLongLong(head >= tail ? head - tail : 0);
}

static PyObject *Segment_get_pending(SegmentObject *self, void *Py_UNUSED(closure))
{
    if (require_open(self) == NULL)
        return NULL;
    uint64_t got = atomic_load_explicit(&self->hdr->get_count, memory_order_acquire);
    uint64_t put = atomic_load_explicit(&self->hdr->put_count, memory_order_acquire);
    return PyLong_FromUnsignedLongLong(put >= got ? put - got : 0);
}

static PyObject *Segment_get_attach_count(SegmentObject *self, void *Py_UNUSED(closure))
{
    if (require_open(self) == NULL)
        return NULL;
    return PyLong_FromUnsignedLongLong(
        atomic_load_explicit(&self->hdr->attach_count, memory_order_acquire));
}

static PyObject *Segment_get_capacity_bytes(SegmentObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->capacity_bytes);
}

static PyObject *Segment_get_max_message_size(SegmentObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->max_message_size);
}

static PyObject *Segment_get_shm_fd(SegmentObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->shm_fd);
}

static PyObject *Segment_get_closed(SegmentObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *Segment_get_mirrored(SegmentObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->mirrored);
}

static PyObject *Segment_get_wake_error_count(SegmentObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->wake_error_count);
}

static void Segment_dealloc(SegmentObject *self)
{
    unmap(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Segment_methods[] = {
    {"try_put", (PyCFunction)Segment_try_put, METH_O, try_put_doc},
    {"try_put_many", (PyCFunction)Segment_try_put_many, METH_O, try_put_many_doc},
    {"try_get", (PyCFunction)Segment_try_get, METH_NOARGS, try_get_doc},
    {"try_get_many", (PyCFunction)Segment_try_get_many, METH_O, try_get_many_doc},
    {"peek", (PyCFunction)Segment_peek, METH_NOARGS, peek_doc},
    {"consume", (PyCFunction)Segment_consume, METH_NOARGS, consume_doc},
    {"arm_get_wait", (PyCFunction)Segment_arm_get_wait, METH_NOARGS, arm_get_wait_doc},
    {"arm_put_wait", (PyCFunction)Segment_arm_put_wait, METH_O, arm_put_wait_doc},
    {"set_wake_fds", (PyCFunction)Segment_set_wake_fds, METH_VARARGS, set_wake_fds_doc},
    {"close", (PyCFunction)Segment_close, METH_NOARGS, close_doc},
    {"close_shm_fd", (PyCFunction)Segment_close_shm_fd, METH_NOARGS, close_shm_fd_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Segment_getset[] = {
    {"depth_bytes", (getter)Segment_get_depth_bytes, NULL, "bytes in use (records + headers)", NULL},
    {"pending", (getter)Segment_get_pending, NULL, "messages put and not yet taken", NULL},
    {"attach_count", (getter)Segment_get_attach_count, NULL, "times a peer attached", NULL},
    {"capacity_bytes", (getter)Segment_get_capacity_bytes, NULL, "size of the data area", NULL},
    {"max_message_size", (getter)Segment_get_max_message_size, NULL, "largest payload", NULL},
    {"shm_fd", (getter)Segment_get_shm_fd, NULL, "owned shm fd, or -1", NULL},
    {"closed", (getter)Segment_get_closed, NULL, "close() was called", NULL},
    {"mirrored", (getter)Segment_get_mirrored, NULL, "data mapped twice: peek never copies", NULL},
    {"wake_error_count", (getter)Segment_get_wake_error_count, NULL, "failed eventfd writes", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SegmentType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aspen._ring.Segment",
    .tp_basicsize = sizeof(SegmentObject),
    .tp_dealloc = (destructor)Segment_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A mapped ring segment. Made by create(), attach() or attach_fd(), never directly.",
    .tp_methods = Segment_methods,
    .tp_getset = Segment_getset,
    .tp_as_buffer = &Segment_as_buffer,
};

/* ---- module functions -------------------------------------------------------------------- */

static SegmentObject *new_segment(void)
{
    SegmentObject *self = PyObject_New(SegmentObject, &SegmentType);
    if (self == NULL)
        return NULL;
    self->hdr = NULL;
    self->data = NULL;
    self->map_size_bytes = 0;
    self->capacity_bytes = 0;
    self->max_message_size = 0;
    self->cached_tail = 0;
    self->cached_head = 0;
    self->wake_error_count = 0;
    self->shm_fd = -1;
    self->data_fd = -1;
    self->space_fd = -1;
    self->busy = 0;
    self->exports = 0;
    self->mirrored = 0;
    self->putting = 0;
    self->getting = 0;
    self->closed = 0;
    return self;
}

PyDoc_STRVAR(create_doc,
"create(name, capacity_bytes, max_message_size, /) -> Segment\n\n"
"Create (O_EXCL, mode 0600) and initialise the shm object `name` ('/...'). capacity_bytes must\n"
"be a multiple of 8; max_message_size at most capacity_bytes - 8. The shm fd stays open\n"
"(Segment.shm_fd) so it can be passed to a child process.");

static PyObject *ring_create(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *name_obj;
    long long capacity_arg, max_message_arg; /* signed, so a negative value is refused, not wrapped */
    if (!PyArg_ParseTuple(args, "ULL:create", &name_obj, &capacity_arg, &max_message_arg))
        return NULL;
    const char *name;
    if (check_name(name_obj, &name) < 0)
        return NULL;
    if (capacity_arg < 0 || max_message_arg < 0) {
        PyErr_Format(UsageError, "capacity_bytes and max_message_size must be >= 0, got %lld, %lld",
                     capacity_arg, max_message_arg);
        return NULL;
    }
    unsigned long long capacity = (unsigned long long)capacity_arg;
    unsigned long long max_message = (unsigned long long)max_message_arg;
    if (capacity < MIN_CAPACITY_SIZE || capacity > MAX_CAPACITY_SIZE || capacity % RECORD_ALIGN) {
        PyErr_Format(UsageError,
                     "capacity_bytes must be a multiple of %u in [%u, %llu], got %llu",
                     RECORD_ALIGN, MIN_CAPACITY_SIZE, (unsigned long long)MAX_CAPACITY_SIZE,
                     capacity);
        return NULL;
    }
    if (max_message > capacity - RECORD_HEADER_SIZE || max_message > UINT32_MAX - RECORD_ALIGN) {
        PyErr_Format(UsageError,
                     "max_message_size %llu does not fit a ring of %llu bytes (limit %llu)",
                     max_message, capacity, capacity - RECORD_HEADER_SIZE);
        return NULL;
    }
    SegmentObject *self = new_segment();
    if (self == NULL)
        return NULL;
    size_t map_size = (size_t)(RING_DATA_OFFSET + capacity);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name_obj);
        Py_DECREF(self);
        return NULL;
    }
    self->shm_fd = fd;
    if (ftruncate(fd, (off_t)map_size) < 0 || map_ring(self, fd, capacity) < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name_obj);
        shm_unlink(name); /* we created it: leave nothing behind */
        Py_DECREF(self); /* closes fd */
        return NULL;
    }
    self->capacity_bytes = capacity;
    self->max_message_size = max_message;
    struct ring_header *h = self->hdr; /* ftruncate zero-filled everything */
    h->version = RING_VERSION;
    h->data_offset = RING_DATA_OFFSET;
    h->capacity_bytes = capacity;
    h->max_message_size = max_message;
    /* Magic last, with release: an attacher that sees it sees the whole header. */
    atomic_store_explicit(&h->magic, RING_MAGIC, memory_order_release);
    return (PyObject *)self;
}

static PyObject *attach_mapped(SegmentObject *self, int fd, PyObject *label)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, label);
    if (st.st_size < (off_t)(RING_DATA_OFFSET + MIN_CAPACITY_SIZE) ||
        (uint64_t)st.st_size > RING_DATA_OFFSET + MAX_CAPACITY_SIZE) {
        PyErr_Format(UsageError, "%R is not an Aspen ring: size %lld bytes", label,
                     (long long)st.st_size);
        return NULL;
    }
    uint64_t file_capacity = (uint64_t)st.st_size - RING_DATA_OFFSET;
    if (map_ring(self, fd, file_capacity) < 0)
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, label);
    struct ring_header *h = self->hdr;
    uint64_t magic = atomic_load_explicit(&h->magic, memory_order_acquire);
    if (magic != RING_MAGIC) {
        PyErr_Format(UsageError, "%R is not an Aspen ring: bad magic 0x%llx", label,
                     (unsigned long long)magic);
        return NULL;
    }
    if (h->version != RING_VERSION || h->data_offset != RING_DATA_OFFSET) {
        PyErr_Format(UsageError, "%R has ring layout version %u, this build reads %u", label,
                     h->version, RING_VERSION);
        return NULL;
    }
    uint64_t capacity = h->capacity_bytes, max_message = h->max_message_size;
    if (capacity != file_capacity || capacity % RECORD_ALIGN ||
        max_message > capacity - RECORD_HEADER_SIZE) {
        PyErr_Format(UsageError, "%R has an inconsistent ring header", label);
        return NULL;
    }
    self->capacity_bytes = capacity;
    self->max_message_size = max_message;
    self->cached_tail = atomic_load_explicit(&h->tail, memory_order_acquire);
    self->cached_head = atomic_load_explicit(&h->head, memory_order_acquire);
    atomic_fetch_add_explicit(&h->attach_count, 1, memory_order_seq_cst);
    return (PyObject *)self;
}

PyDoc_STRVAR(attach_doc,
"attach(name, /) -> Segment\n\nMap the existing ring `name`; raises FileNotFoundError if it\n"
"does not exist and UsageError if it is not a valid Aspen ring.");

static PyObject *ring_attach(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *name_obj;
    if (!PyArg_ParseTuple(args, "U:attach", &name_obj))
        return NULL;
    const char *name;
    if (check_name(name_obj, &name) < 0)
        return NULL;
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0)
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name_obj);
    SegmentObject *self = new_segment();
    if (self == NULL) {
        close(fd);
        return NULL;
    }
    PyObject *result = attach_mapped(self, fd, name_obj);
    close(fd); /* the mapping keeps the object alive */
    if (result == NULL)
        Py_DECREF(self);
    return result;
}

PyDoc_STRVAR(attach_fd_doc,
"attach_fd(fd, /) -> Segment\n\nMap the ring behind an shm fd (e.g. inherited with pass_fds).\n"
"The fd is not closed. Raises UsageError if it is not a valid Aspen ring.");

static PyObject *ring_attach_fd(PyObject *Py_UNUSED(module), PyObject *arg)
{
    long fd_long = PyLong_AsLong(arg);
    if (fd_long == -1 && PyErr_Occurred())
        return NULL;
    if (fd_long < 0 || fd_long > INT_MAX) {
        PyErr_Format(UsageError, "fd must be in [0, %d], got %ld", INT_MAX, fd_long);
        return NULL;
    }
    int fd = (int)fd_long;
    SegmentObject *self = new_segment();
    if (self == NULL)
        return NULL;
    PyObject *result = attach_mapped(self, fd, arg);
    if (result == NULL)
        Py_DECREF(self);
    return result;
}

PyDoc_STRVAR(unlink_doc,
"unlink(name, /) -> bool\n\nRemove the name of a ring; mappings stay valid. True if removed,\n"
"False if it did not exist (so calling it twice is fine).");

static PyObject *ring_unlink(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *name_obj;
    if (!PyArg_ParseTuple(args, "U:unlink", &name_obj))
        return NULL;
    const char *name;
    if (check_name(name_obj, &name) < 0)
        return NULL;
    if (shm_unlink(name) == 0)
        Py_RETURN_TRUE;
    if (errno == ENOENT)
        Py_RETURN_FALSE;
    return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name_obj);
}

static PyMethodDef ring_functions[] = {
    {"create", ring_create, METH_VARARGS, create_doc},
    {"attach", ring_attach, METH_VARARGS, attach_doc},
    {"attach_fd", ring_attach_fd, METH_O, attach_fd_doc},
    {"unlink", ring_unlink, METH_VARARGS, unlink_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef ring_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "aspen._ring",
    .m_doc = "Shared-memory SPSC ring of variable-size messages (see aspen.ring for the API).",
    .m_size = -1,
    .m_methods = ring_functions,
};

PyMODINIT_FUNC PyInit__ring(void)
{
    PyObject *errors = PyImport_ImportModule("aspen.errors");
    if (errors == NULL)
        return NULL;
    UsageError = PyObject_GetAttrString(errors, "UsageError");
    LimitExceeded = PyObject_GetAttrString(errors, "LimitExceeded");
    PyObject *aspen_error = PyObject_GetAttrString(errors, "AspenError");
    Py_DECREF(errors);
    if (UsageError == NULL || LimitExceeded == NULL || aspen_error == NULL) {
        Py_XDECREF(aspen_error);
        return NULL;
    }
    RingCorrupted = PyErr_NewExceptionWithDoc(
        "aspen._ring.RingCorrupted",
        "The shared ring's counters or a record header are inconsistent; the ring is unusable.",
        aspen_error, NULL);
    Py_DECREF(aspen_error);
    if (RingCorrupted == NULL || PyType_Ready(&SegmentType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&ring_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Segment", (PyObject *)&SegmentType) < 0 ||
        PyModule_AddObjectRef(module, "RingCorrupted", RingCorrupted) < 0 ||
        PyModule_AddIntConstant(module, "RECORD_HEADER_SIZE", RECORD_HEADER_SIZE) < 0 ||
        PyModule_AddIntConstant(module, "RECORD_ALIGN", RECORD_ALIGN) < 0 ||
        PyModule_AddIntConstant(module, "MIN_CAPACITY_SIZE", MIN_CAPACITY_SIZE) < 0 ||
        PyModule_AddIntConstant(module, "DATA_OFFSET", RING_DATA_OFFSET) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
