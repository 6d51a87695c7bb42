/* Strict number parsing for command-line options: the whole string must be a number within range.
 * Each returns 0 and stores the value, or -1 (leaving *out alone) so the caller can name the option
 * and the bad value in its message. */
#ifndef SD_ARGS_H
#define SD_ARGS_H
#include <stdint.h>

/* A decimal integer in [lo, hi]. */
int sd_arg_int(const char *s, long lo, long hi, int *out);
/* A decimal number in [lo, hi] (the range is checked before rounding to float; NaN never passes). */
int sd_arg_float(const char *s, double lo, double hi, float *out);
/* A non-negative integer (decimal, 0x hex or 0 octal) that fits 64 bits. */
int sd_arg_u64(const char *s, uint64_t *out);
#endif
