/* A pass over MessagePack bytes before msgpack-c unpacks them. msgpack-c allocates count x object for an
 * array or map header before it reads the elements, so a 5-byte map32 header claiming 2^32 entries would
 * have it allocate tens of gigabytes. Every element takes at least one byte, so a container claiming more
 * elements than bytes remain is malformed: rejecting it bounds what unpacking allocates by the message
 * size. Nesting deeper than SD_MP_MAX_DEPTH is rejected too. */
#ifndef SD_MP_CHECK_H
#define SD_MP_CHECK_H
#include <stddef.h>

#define SD_MP_MAX_DEPTH 16

/* 0 when buf holds exactly one well-formed object within the limits; -1 with why (a sentence) otherwise. */
int sd_mp_check(const void *buf, size_t len, char *why, size_t why_cap);

#endif
