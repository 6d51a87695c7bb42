#!/usr/bin/env python3
"""Differential check of the hand-written pre-tokenizers (tokenizer/pretok.c) against the published
splitting regexes run by Python's `regex` module (which has \p{..} classes and lookahead): random strings
from characters where the regexes differ (letters of every case kind, marks, numbers, punctuation,
symbols, every kind of whitespace, CJK, emoji), split by both, compared piece by piece.

Usage: make && python3 tools/pretok_fuzz.py [SEED] [N_PER_PRE]   (needs python3-regex; prints mismatches)
Each regex sequence is applied the way Hugging Face's Split(isolated) and llama.cpp apply them: every
regex splits every piece of the previous one, keeping matches and the text between them.
"""
import os
import random
import subprocess
import sys
import tempfile

import regex

DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tokenizer/pretok.h"
int main(int argc, char **argv) {
    sd_pretok_kind k; sd_err err;
    if (sd_pretok_find(argv[1], &k, &err)) { puts(err.msg); return 1; }
    static char line[1 << 16], buf[1 << 15];
    while (fgets(line, sizeof line, stdin)) {
        size_t n = strlen(line) / 2;
        for (size_t i = 0; i < n; i++) { unsigned v; sscanf(line + 2 * i, "%2x", &v); buf[i] = (char)v; }
        sd_span *sp; size_t np;
        sd_pretok_split(k, buf, n, &sp, &np, NULL);
        for (size_t i = 0; i < np; i++) printf("%zu ", sp[i].off + sp[i].len);
        printf("\n"); free(sp);
    }
}
"""


def build_driver(tmp):
    src = os.path.join(tmp, "pretok_drv.c")
    exe = os.path.join(tmp, "pretok_drv")
    with open(src, "w") as f:
        f.write(DRIVER)
    build = os.environ.get("BUILD", "build")
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-std=c11", "-D_GNU_SOURCE", "-I.", "-o", exe, src,
                    os.path.join(build, "libspecd.a"), "-lm", "-pthread"], check=True)
    return exe


GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
L3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
Q2 = L3.replace(r"\p{N}{1,3}", r"\p{N}")
O200 = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
DSL = ["[\r\n]", "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝ\u1f5f-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌ\u1fd0-\u1fd3\u1fd6-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
       "\\s?[!-/:-~！-／：-～‘-‟　-。]+", "\\s+$", "[一-龥ࠀ-一가-퟿]+", "\\p{N}+"]
DSC = ["[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}"]
FAL = [r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"]
STC = [r"\p{N}", GPT2]
DEF = [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"]
PRES = {"gpt2": [GPT2], "llama-bpe": [L3], "qwen2": [Q2], "gpt-4o": [O200], "deepseek-llm": DSL,
        "deepseek-coder": DSC, "falcon": FAL, "starcoder": STC, "default": DEF}
def ref_split(text, exprs):
    pieces = [text]
    for e in exprs:
        r = regex.compile(e)
        out = []
        for p in pieces:
            last = 0
            for m in r.finditer(p):
                if m.end() == m.start(): continue
                if m.start() > last: out.append(p[last:m.start()])
                out.append(m.group()); last = m.end()
            if last < len(p): out.append(p[last:])
        pieces = out
    ends = []; pos = 0
    for p in pieces:
        pos += len(p.encode()); ends.append(pos)
    return ends
ATOMS = ["a", "b", "Z", "Q", "é", "É", "ǅ", "ʰ", "ß", "ſ", "K", " ", "  ", "\n", "\r", "\t", "\u00a0", "\u3000", "\u2028", "\u0085",
         "'", "s", "S", "t", "re", "RE", "ll", "d", "m", "v", "e", "3", "٣", "½", "Ⅳ", ".", ",", "!", "?", "$", "+", "<", "=", "^", "`", "~", "|", "/", "-", "_", "(", "“",
         "\u0301", "\u0903", "你", "好", "가", "ア", "ก", "\u0e31", "क", "\u093f", "😀", "🦙", "\u200d", "©", "！", "：", "‘", "。", "Ω", "ώ", "ࠀ", "\x00", "\x7f", "\x1c", "\u180e", "\u200b", "\U0001d400", "\u02b0"]


def main():
    random.seed(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    per = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_driver(tmp)
        bad = 0
        for name, exprs in PRES.items():
            bad += check(exe, name, exprs, per)
    print("total mismatches:", bad)
    return 1 if bad else 0


def check(exe, name, exprs, per):
    cases = []
    for _ in range(per):
        n = random.randint(0, 40)
        cases.append("".join(random.choice(ATOMS) for _ in range(n)))
    inp = "".join(c.encode().hex() + "\n" for c in cases)
    out = subprocess.run([exe, name], input=inp.encode(), capture_output=True).stdout.decode().split("\n")
    nb = 0
    for c, o in zip(cases, out):
        want = ref_split(c, exprs)
        got = [int(x) for x in o.split()]
        if want != got:
            nb += 1
            if nb <= 5: print(name, repr(c), "want", want, "got", got)
    print(name, "mismatches:", nb, "/", len(cases))
    return nb


if __name__ == "__main__":
    sys.exit(main())
