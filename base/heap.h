/* Binary heap steps over an array of fixed-size elements, ordered by a caller's "a goes above b" test.
 * Static inline so that at each call site the element size and the comparison are constants the
 * compiler folds in (used in hot loops: top-k sampling, BPE merges). */
#ifndef SD_HEAP_H
#define SD_HEAP_H
#include <stdbool.h>
#include <stddef.h>

typedef bool (*sd_heap_above)(const void *a, const void *b);

static inline void sd_heap_swap_(char *a, char *b, size_t size) {
    for (size_t k = 0; k < size; k++) {
        char t = a[k];
        a[k] = b[k];
        b[k] = t;
    }
}

/* Moves element i of h[0..n) down until neither child goes above it. */
static inline void sd_heap_down(void *h, size_t n, size_t i, size_t size, sd_heap_above above) {
    char *b = h;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, top = i;
        if (l < n && above(b + l * size, b + top * size)) top = l;
        if (r < n && above(b + r * size, b + top * size)) top = r;
        if (top == i) return;
        sd_heap_swap_(b + i * size, b + top * size, size);
        i = top;
    }
}

/* Moves element i up until its parent goes above it (after appending it at i). */
static inline void sd_heap_up(void *h, size_t i, size_t size, sd_heap_above above) {
    char *b = h;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!above(b + i * size, b + p * size)) return;
        sd_heap_swap_(b + i * size, b + p * size, size);
        i = p;
    }
}
#endif
