/* Peak heap bytes in use, the CPU counterpart of torch.cuda.max_memory_allocated, for experiments/bench.py.
 *
 * Preloaded into a benchmark subprocess (LD_PRELOAD), it wraps malloc and friends and keeps the bytes in use
 * (malloc_usable_size of every live block) and their high-water mark. Unlike the process's peak RSS it does not
 * count the pages of library code that a run touches, nor memory the allocator keeps after a free: only data.
 * Read and reset from Python through ctypes: heappeak_current(), heappeak_peak(), heappeak_reset().
 * Build: gcc -O2 -shared -fPIC -o heap_peak.so heap_peak.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stddef.h>
#include <stdatomic.h>
#include <string.h>
#include <errno.h>

static atomic_long cur = 0, peak = 0;
static void *(*r_malloc)(size_t), *(*r_calloc)(size_t, size_t), *(*r_realloc)(void *, size_t);
static void (*r_free)(void *);
static int (*r_posix_memalign)(void **, size_t, size_t);
static void *(*r_memalign)(size_t, size_t), *(*r_aligned_alloc)(size_t, size_t);
static char boot[1 << 16]; static size_t boot_used = 0;  /* dlsym may call calloc before we are set up */

static void init(void) {
    r_malloc = dlsym(RTLD_NEXT, "malloc"); r_calloc = dlsym(RTLD_NEXT, "calloc");
    r_realloc = dlsym(RTLD_NEXT, "realloc"); r_free = dlsym(RTLD_NEXT, "free");
    r_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign"); r_memalign = dlsym(RTLD_NEXT, "memalign");
    r_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
}
static inline void add(void *p) {
    if (!p) return;
    long n = (long)malloc_usable_size(p);
    long c = atomic_fetch_add(&cur, n) + n, pk = atomic_load(&peak);
    while (c > pk && !atomic_compare_exchange_weak(&peak, &pk, c)) {}
}
static inline void sub(void *p) { if (p) atomic_fetch_sub(&cur, (long)malloc_usable_size(p)); }
static int is_boot(void *p) { return (char *)p >= boot && (char *)p < boot + sizeof boot; }

void *malloc(size_t n) { if (!r_malloc) init(); void *p = r_malloc(n); add(p); return p; }
void *calloc(size_t a, size_t b) {
    if (!r_calloc) {  /* during init: a static buffer */
        size_t n = (a * b + 15) & ~(size_t)15; void *p = boot + boot_used; boot_used += n; memset(p, 0, n); return p;
    }
    void *p = r_calloc(a, b); add(p); return p;
}
void *realloc(void *q, size_t n) {
    if (!r_realloc) init();
    if (is_boot(q)) { void *p = malloc(n); if (p && q) memcpy(p, q, n); return p; }
    sub(q); void *p = r_realloc(q, n); if (p) add(p); else if (q && n) add(q); return p;
}
void free(void *p) { if (!p || is_boot(p)) return; if (!r_free) init(); sub(p); r_free(p); }
int posix_memalign(void **out, size_t al, size_t n) { if (!r_posix_memalign) init(); int rc = r_posix_memalign(out, al, n); if (!rc) add(*out); return rc; }
void *memalign(size_t al, size_t n) { if (!r_memalign) init(); void *p = r_memalign(al, n); add(p); return p; }
void *aligned_alloc(size_t al, size_t n) { if (!r_aligned_alloc) init(); void *p = r_aligned_alloc(al, n); add(p); return p; }

long heappeak_current(void) { return atomic_load(&cur); }
long heappeak_peak(void) { return atomic_load(&peak); }
void heappeak_reset(void) { atomic_store(&peak, atomic_load(&cur)); }
