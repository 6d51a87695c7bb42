/* What the fuzz targets share. Each tests/fuzz/fuzz_*.c defines one libFuzzer entry point, FUZZ_ENTRY
 * (LLVMFuzzerTestOneInput unless the includer renames it: tests/test_fuzz.c includes every target into one
 * program that replays the corpus under the plain compiler). The loaders take paths, so an input is
 * written to a memfd and opened through /proc/self/fd: the real open/mmap path runs, nothing touches disk.
 * A target returns 0 whatever the input; what it checks is that nothing crashes, leaks, hangs or trips
 * the sanitizers. */
#ifndef SD_FUZZ_H
#define SD_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef FUZZ_ENTRY
#define FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

/* A memfd named name holding exactly buf[0..n); *path receives its /proc path. -1 when it cannot be made. */
static inline int fuzz_memfile(int *fd, const char *name, const void *buf, size_t n, char *path, size_t cap) {
    if (*fd < 0 && (*fd = memfd_create(name, 0)) < 0) return -1;
    if (ftruncate(*fd, 0) || (n && pwrite(*fd, buf, n, 0) != (ssize_t)n)) return -1;
    snprintf(path, cap, "/proc/self/fd/%d", *fd);
    return 0;
}

/* Little-endian u32 at p (inputs carry section lengths this way). */
static inline uint32_t fuzz_u32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
#endif
