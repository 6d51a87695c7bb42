/* Unicode support for the tokenizers (UTF-8 itself is base/utf8.h): general categories
 * and White_Space from tables generated out of the Unicode Character Database (tools/gen_unicode.py ->
 * tokenizer/unicode_tables.c), and GPT-2's byte <-> printable code point mapping used by byte-level BPE. */
#ifndef SD_UNICODE_H
#define SD_UNICODE_H
#include <stddef.h>
#include <stdint.h>

#include "base/utf8.h"

/* General categories; the order is the generator's (tools/gen_unicode.py CATS). */
enum sd_ucat {
    SD_UC_Cn, SD_UC_Lu, SD_UC_Ll, SD_UC_Lt, SD_UC_Lm, SD_UC_Lo, SD_UC_Mn, SD_UC_Mc, SD_UC_Me,
    SD_UC_Nd, SD_UC_Nl, SD_UC_No, SD_UC_Pc, SD_UC_Pd, SD_UC_Ps, SD_UC_Pe, SD_UC_Pi, SD_UC_Pf, SD_UC_Po,
    SD_UC_Sm, SD_UC_Sc, SD_UC_Sk, SD_UC_So, SD_UC_Zs, SD_UC_Zl, SD_UC_Zp, SD_UC_Cc, SD_UC_Cf, SD_UC_Cs,
    SD_UC_Co, SD_UC_COUNT
};

/* Flags: the major class of the category, subclasses of letters, and White_Space (what \s matches). */
enum {
    SD_UF_L = 1 << 0, SD_UF_M = 1 << 1, SD_UF_N = 1 << 2, SD_UF_P = 1 << 3, SD_UF_S = 1 << 4,
    SD_UF_Z = 1 << 5, SD_UF_C = 1 << 6, SD_UF_SPACE = 1 << 7,
    SD_UF_LU = 1 << 8, SD_UF_LL = 1 << 9, SD_UF_LT = 1 << 10, SD_UF_LM = 1 << 11, SD_UF_LO = 1 << 12,
};

/* General category of cp (SD_UC_Cn for unassigned and for cp > U+10FFFF). */
int sd_uni_cat(uint32_t cp);
/* SD_UF_* flags of cp. */
unsigned sd_uni_flags(uint32_t cp);
int sd_uni_is_space(uint32_t cp);
/* Two-letter name of a category ("Lu"), for messages and tests. */
const char *sd_uni_cat_name(int cat);

/* GPT-2 byte-level alphabet: every byte has a printable stand-in code point (printable Latin-1 bytes
 * stand for themselves, the rest map to U+0100..U+0143 in byte order). */
uint32_t sd_uni_byte_to_cp(uint8_t b);
/* The byte a stand-in code point represents, or -1 when cp is none of the 256. */
int sd_uni_cp_to_byte(uint32_t cp);

/* Generated tables (tokenizer/unicode_tables.c). */
extern const uint32_t sd_uni_cat_runs[];
extern const int sd_uni_n_cat_runs;
extern const uint32_t sd_uni_space_ranges[][2];
extern const int sd_uni_n_space_ranges;

#endif
