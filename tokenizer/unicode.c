/* Category lookup by binary search over the generated run table, GPT-2 byte mapping. */
#include "tokenizer/unicode.h"

static const char *const cat_names[SD_UC_COUNT] = {
    "Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
    "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co"};

const char *sd_uni_cat_name(int cat) { return cat >= 0 && cat < SD_UC_COUNT ? cat_names[cat] : "??"; }

/* Flags of each category (without White_Space, which is a separate property). */
static unsigned cat_flags(int c) {
    switch (c) {
    case SD_UC_Lu: return SD_UF_L | SD_UF_LU;
    case SD_UC_Ll: return SD_UF_L | SD_UF_LL;
    case SD_UC_Lt: return SD_UF_L | SD_UF_LT;
    case SD_UC_Lm: return SD_UF_L | SD_UF_LM;
    case SD_UC_Lo: return SD_UF_L | SD_UF_LO;
    case SD_UC_Mn: case SD_UC_Mc: case SD_UC_Me: return SD_UF_M;
    case SD_UC_Nd: case SD_UC_Nl: case SD_UC_No: return SD_UF_N;
    case SD_UC_Pc: case SD_UC_Pd: case SD_UC_Ps: case SD_UC_Pe: case SD_UC_Pi: case SD_UC_Pf: case SD_UC_Po:
        return SD_UF_P;
    case SD_UC_Sm: case SD_UC_Sc: case SD_UC_Sk: case SD_UC_So: return SD_UF_S;
    case SD_UC_Zs: case SD_UC_Zl: case SD_UC_Zp: return SD_UF_Z;
    default: return SD_UF_C;  /* Cc Cf Cs Co Cn */
    }
}

static int cat_search(uint32_t cp) {
    if (cp > 0x10FFFF) return SD_UC_Cn;
    /* last run whose first code point is <= cp */
    int lo = 0, hi = sd_uni_n_cat_runs - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if ((sd_uni_cat_runs[mid] >> 5) <= cp) lo = mid;
        else hi = mid - 1;
    }
    return (int)(sd_uni_cat_runs[lo] & 31);
}

/* ASCII is most text: a small table built on first use avoids the search there. The race on first use
 * is benign (every thread writes the same values; the ready flag is set last). */
static unsigned short ascii_flags[128];
static volatile int ascii_ready;

static unsigned flags_slow(uint32_t cp) {
    return cat_flags(cat_search(cp)) | (sd_uni_is_space(cp) ? SD_UF_SPACE : 0);
}

unsigned sd_uni_flags(uint32_t cp) {
    if (cp < 128) {
        if (!ascii_ready) {
            for (uint32_t c = 0; c < 128; c++) ascii_flags[c] = (unsigned short)flags_slow(c);
            __atomic_store_n(&ascii_ready, 1, __ATOMIC_RELEASE);
        }
        return ascii_flags[cp];
    }
    return flags_slow(cp);
}

int sd_uni_cat(uint32_t cp) { return cat_search(cp); }

int sd_uni_is_space(uint32_t cp) {
    for (int i = 0; i < sd_uni_n_space_ranges; i++) {
        if (cp < sd_uni_space_ranges[i][0]) return 0;
        if (cp <= sd_uni_space_ranges[i][1]) return 1;
    }
    return 0;
}

/* Bytes GPT-2 keeps as themselves: '!'..'~', '¡'..'¬', '®'..'ÿ'. */
static int byte_is_printable(unsigned b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }

uint32_t sd_uni_byte_to_cp(uint8_t b) {
    if (byte_is_printable(b)) return b;
    /* the n-th non-printable byte (in byte order) maps to 256 + n */
    unsigned n = 0;
    if (b <= 0x20) n = b;                       /* 0x00..0x20: 33 bytes */
    else if (b <= 0xA0) n = 33 + (b - 0x7F);    /* 0x7F..0xA0: 34 bytes */
    else n = 33 + 34;                           /* 0xAD */
    return 256 + n;
}

int sd_uni_cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_is_printable(cp) ? (int)cp : -1;
    if (cp < 256 + 33) return (int)(cp - 256);
    if (cp < 256 + 67) return (int)(0x7F + (cp - 256 - 33));
    if (cp == 256 + 67) return 0xAD;
    return -1;
}
