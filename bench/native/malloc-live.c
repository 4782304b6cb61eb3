/*
 * An LD_PRELOAD recorder for bench/tls-memory.ts --live (not part of the gateway): every block
 * malloc, calloc or realloc returns between malloc_live_start() and malloc_live_dump(path) is kept
 * with its size and four return addresses; a block freed meanwhile is dropped. The dump writes one
 * line per block still live: "size addr addr addr addr". Slow (a lock and a backtrace per call):
 * for a few hundred connections, not for timing.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>

#define SLOTS (1u << 22)
#define CALLERS 4
#define TOMBSTONE ((uintptr_t)1)

typedef struct { uintptr_t block; size_t size; void *caller[CALLERS]; } slot;

static slot *table;
static volatile int table_lock;
static volatile int recording;
static __thread int busy;
static void *(*next_malloc)(size_t);
static void (*next_free)(void *);
static void *(*next_calloc)(size_t, size_t);
static void *(*next_realloc)(void *, size_t);
/* dlsym itself may calloc before next_calloc is known. */
static char early[1 << 14];
static size_t early_used;

static void lock (void) { while (__sync_lock_test_and_set(&table_lock, 1)) ; }
static void unlock (void) { __sync_lock_release(&table_lock); }
static size_t home (uintptr_t block) { return (size_t)((block >> 4) * 2654435761u) & (SLOTS - 1); }

static void resolve (void)
{
    if (next_malloc != NULL) return;
    next_calloc = dlsym(RTLD_NEXT, "calloc");
    next_malloc = dlsym(RTLD_NEXT, "malloc");
    next_free = dlsym(RTLD_NEXT, "free");
    next_realloc = dlsym(RTLD_NEXT, "realloc");
}

static void remember (void *block, size_t size)
{
    if (!recording || block == NULL || busy) return;
    busy = 1;
    void *trace[CALLERS + 2];
    int depth = backtrace(trace, CALLERS + 2);
    lock();
    size_t i = home((uintptr_t)block);
    for (size_t probes = 0; table[i].block > TOMBSTONE && probes < SLOTS; probes++) i = (i + 1) & (SLOTS - 1);
    table[i].block = (uintptr_t)block;
    table[i].size = size;
    for (int j = 0; j < CALLERS; j++) table[i].caller[j] = j + 2 < depth ? trace[j + 2] : NULL;
    unlock();
    busy = 0;
}

static void forget (void *block)
{
    if (block == NULL || table == NULL) return;
    lock();
    size_t i = home((uintptr_t)block);
    for (size_t probes = 0; table[i].block != 0 && probes < SLOTS; probes++) {
        if (table[i].block == (uintptr_t)block) { table[i].block = TOMBSTONE; break; }
        i = (i + 1) & (SLOTS - 1);
    }
    unlock();
}

void *malloc (size_t size) { resolve(); void *p = next_malloc(size); remember(p, size); return p; }
void free (void *p)
{
    if ((char *)p >= early && (char *)p < early + sizeof early) return;
    resolve();
    forget(p);
    next_free(p);
}
void *calloc (size_t n, size_t size)
{
    if (next_calloc == NULL) {
        size_t want = (n * size + 15) & ~(size_t)15;
        if (early_used + want > sizeof early) return NULL;
        void *p = early + early_used;
        early_used += want;
        return p; /* static storage: already zero */
    }
    void *p = next_calloc(n, size);
    remember(p, n * size);
    return p;
}
void *realloc (void *old, size_t size) { resolve(); forget(old); void *p = next_realloc(old, size); remember(p, size); return p; }

void malloc_live_start (void)
{
    if (table == NULL) {
        void *m = mmap(NULL, sizeof(slot) * SLOTS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) return;
        table = m;
    }
    recording = 1;
}

int malloc_live_dump (const char *path)
{
    recording = 0;
    if (table == NULL) return -1;
    busy = 1;
    FILE *f = fopen(path, "w");
    if (f == NULL) { busy = 0; return -1; }
    lock();
    for (size_t i = 0; i < SLOTS; i++) {
        if (table[i].block <= TOMBSTONE) continue;
        fprintf(f, "%zu", table[i].size);
        for (int j = 0; j < CALLERS; j++) fprintf(f, " %p", table[i].caller[j]);
        fputc('\n', f);
    }
    unlock();
    fclose(f);
    busy = 0;
    return 0;
}
