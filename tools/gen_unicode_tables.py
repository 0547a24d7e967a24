#!/usr/bin/python3
"""gen_unicode_tables.py -- the character tables of the C tokenizer (aesalign.h).

    /usr/bin/python3 tools/gen_unicode_tables.py            # print the tables
    /usr/bin/python3 tools/gen_unicode_tables.py --write aesalign.h
                                   # replace the block between the markers
    /usr/bin/python3 tools/gen_unicode_tables.py --report   # only the checks

The block sits in "Generated tables" at the very end of aesalign.h, after all
code.  Besides the tables it defines aes__tok_tables(), which hands them to
the tokenizer as an aes__tok_table_set; that struct and the function's
declaration are written by hand in the tokenizer section ("Character
tables"), so a new table needs a field there and a line in generate() here.
Run with Debian's /usr/bin/python3 and python3-regex (Python 3.11.2, regex
2022.10.31), which made the tables in the file: another version of the regex
module brings another Unicode version.

Every table is taken from the very code the Python reference runs, not from a
Unicode file, so the C tokenizer reproduces that code character for character:

  letter, number   what `[\\p{L}]` and `[\\p{N}]` match in the `regex` module
                   compiled with IGNORECASE, as CLIP's pre-tokenizer is.  The
                   regex module carries its own Unicode database, which can be
                   newer than Python's unicodedata: --report prints the
                   differences (with regex 2022.10.31 it is Unicode 15.0 against
                   Python 3.11's 14.0: Kawi, CJK extension H, ... are letters
                   for the pre-tokenizer).  One character, U+0345 COMBINING
                   GREEK YPOGEGRAMMENI, matches none of the pattern's classes
                   under IGNORECASE (it case-folds to a letter, so the negated
                   class refuses it, while \\p{L} does not fold): such
                   characters are listed in "unmatched" and dropped like spaces.
  regex_space      what `\\s` matches in the regex module (whitespace_clean).
  py_space         str.isspace(), used by str.strip() (adds U+001C..U+001F).
  lower            str.lower() one character at a time, as (first, last, delta,
                   stride) runs; plus the full mappings that give two code
                   points (only U+0130 -> "i\\u0307").  The final-sigma rule of
                   str.lower() needs two more classes, "cased" and
                   "case_ignorable", which are read off str.lower()'s own
                   behaviour on probe strings.
  html             html.entities.html5 (the HTML5 named references) packed as
                   text, html's Windows-1252 remapping of numeric references
                   0x80..0x9F, and the code points html.unescape drops.
"""
import argparse
import html
import html.entities
import sys
import unicodedata

try:
    import regex
except ImportError:  # pragma: no cover
    sys.exit("needs the `regex` module: apt-get install -y python3-regex")

BEGIN = "/*@@UNICODE_TABLES_BEGIN@@*/"
END = "/*@@UNICODE_TABLES_END@@*/"
MAXCP = 0x110000


def all_chars():
    for cp in range(MAXCP):
        if 0xD800 <= cp <= 0xDFFF:
            continue   # never produced by UTF-8 decoding or by html.unescape
        yield cp


def to_ranges(cps):
    ranges = []
    for cp in sorted(cps):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        elif ranges and ranges[-1][1] == 0xD7FF and cp == 0xE000:
            ranges[-1][1] = cp   # the surrogate gap never matters
        else:
            ranges.append([cp, cp])
    return ranges


def classify():
    letter = regex.compile(r"[\p{L}]", regex.IGNORECASE)
    number = regex.compile(r"[\p{N}]", regex.IGNORECASE)
    other = regex.compile(r"[^\s\p{L}\p{N}]", regex.IGNORECASE)
    space = regex.compile(r"\s")
    t = {k: [] for k in ("letter", "number", "regex_space", "py_space", "unmatched")}
    for cp in all_chars():
        c = chr(cp)
        is_l, is_n = bool(letter.fullmatch(c)), bool(number.fullmatch(c))
        is_o, is_s = bool(other.fullmatch(c)), bool(space.fullmatch(c))
        if is_l + is_n + is_o + is_s > 1:
            sys.exit("U+%04X is in two pre-tokenizer classes: the C tokenizer cannot express that" % cp)
        if is_l:
            t["letter"].append(cp)
        if is_n:
            t["number"].append(cp)
        if is_s:
            t["regex_space"].append(cp)
        if is_l + is_n + is_o + is_s == 0:
            t["unmatched"].append(cp)
        if c.isspace():
            t["py_space"].append(cp)
    return t


def lower_tables():
    """str.lower() per character, compressed into runs; full (2 cp) mappings aside."""
    single, full = {}, []
    for cp in all_chars():
        low = chr(cp).lower()
        if low == chr(cp):
            continue
        if len(low) == 1:
            single[cp] = ord(low)
        else:
            full.append((cp, [ord(x) for x in low]))
    runs = []   # [first, last, delta, stride]
    for cp in sorted(single):
        delta = single[cp] - cp
        if runs:
            r = runs[-1]
            if r[2] == delta and r[0] == r[1] and cp - r[1] in (1, 2):
                r[3] = cp - r[1]
                r[1] = cp
                continue
            if r[2] == delta and cp - r[1] == r[3]:
                r[1] = cp
                continue
        runs.append([cp, cp, delta, 1])
    return runs, full


def sigma_classes():
    """The two properties of str.lower()'s final-sigma rule, observed directly.

    Python lowers U+03A3 to final U+03C2 when it is preceded by a cased letter
    (skipping case-ignorable characters) and not followed by one (same skip).
    For a probe character c:  c + SIGMA  lowers to a final sigma exactly when c
    is cased and not case-ignorable; "A" + c + SIGMA when c is case-ignorable
    (skipped, so "A" decides) or cased.  Whether an ignorable character is also
    cased never matters (the rule always skips it)."""
    cased, ignorable = [], []
    for cp in all_chars():
        c = chr(cp)
        if (c + "\u03a3").lower()[-1] == "\u03c2":
            cased.append(cp)
        elif ("A" + c + "\u03a3").lower()[-1] == "\u03c2":
            ignorable.append(cp)
    # Check the forward half of the rule agrees: "A" + SIGMA + c is final unless c is cased.
    for cp in cased[:5000]:
        if ("A\u03a3" + chr(cp)).lower()[1] != "\u03c3":
            sys.exit("final-sigma probe inconsistent at U+%04X" % cp)
    return cased, ignorable


def html_tables():
    entities = html.entities.html5
    names = sorted((k for k in entities if k.endswith(";")), key=lambda k: k[:-1])
    for k in entities:
        if not k.endswith(";") and entities[k] != entities[k + ";"]:
            sys.exit("legacy entity %r differs from %r" % (k, k + ";"))
    entries = []
    for k in names:
        base = k[:-1]
        legacy = "*" if base in entities else ""
        entries.append("%s%s=%s" % (base, legacy, ",".join("%X" % ord(c) for c in entities[k])))
    for e in entries:
        if any(ch in e for ch in ' "\\') or not e.isascii():
            sys.exit("entity entry %r cannot be packed" % e)
    remap = dict(html._invalid_charrefs)
    cp1252 = []
    for n in range(0x80, 0xA0):
        cp1252.append(ord(remap[n]))
    if remap.get(0) != "\ufffd" or remap.get(13) != "\r" or len(remap) != 34:
        sys.exit("html._invalid_charrefs changed: update the C code")
    dropped = to_ranges(html._invalid_codepoints)
    return entries, cp1252, dropped


def c_ranges(name, ranges, comment):
    out = ["/* %s (%d ranges) */" % (comment, len(ranges)),
           "static const uint32_t %s[][2] = {" % name]
    line = "   "
    for a, b in ranges:
        item = " {0x%X,0x%X}," % (a, b)
        if len(line) + len(item) > 110:
            out.append(line)
            line = "   "
        line += item
    out.append(line)
    out.append("};")
    return "\n".join(out)


RANGE_TABLES = [  # field of aes__tok_table_set, C array
    ("letter", "aes__tok_letter_ranges"), ("number", "aes__tok_number_ranges"),
    ("regex_space", "aes__tok_regex_space_ranges"), ("py_space", "aes__tok_py_space_ranges"),
    ("unmatched", "aes__tok_unmatched_ranges"), ("cased", "aes__tok_cased_ranges"),
    ("case_ignorable", "aes__tok_case_ignorable_ranges"), ("html_dropped", "aes__tok_html_dropped_ranges"),
]


def c_getter():
    lines = ["/* The tables as the tokenizer reads them (aes__tok_table_set, declared in",
             " * the tokenizer section). */",
             "#define AES__TOK_TABLE(a) a, sizeof a / sizeof a[0]",
             "static const aes__tok_table_set *aes__tok_tables(void) {",
             "    static const aes__tok_table_set t = {"]
    for field, arr in RANGE_TABLES:
        lines.append("        {AES__TOK_TABLE(%s)},%s" % (arr, " " * (32 - len(arr)) + "/* %s */" % field))
    lines.append("        AES__TOK_TABLE(aes__tok_lower_runs),")
    lines.append("        AES__TOK_TABLE(aes__tok_lower_full),")
    lines.append("        aes__tok_html_cp1252,")
    lines.append("        AES__TOK_TABLE(aes__tok_html_entity_chunks)")
    lines.append("    };")
    lines.append("    return &t;")
    lines.append("}")
    lines.append("#undef AES__TOK_TABLE")
    return "\n".join(lines)


def generate():
    t = classify()
    runs, full = lower_tables()
    cased, ignorable = sigma_classes()
    entities, cp1252, dropped = html_tables()
    if [cp for cp, _ in full] != [0x130]:
        sys.exit("expected exactly one full lowercase mapping (U+0130), got %r" % full)
    parts = []
    parts.append(BEGIN)
    parts.append("/* Generated by tools/gen_unicode_tables.py (do not edit by hand; rerun it with\n"
                 " *   /usr/bin/python3 tools/gen_unicode_tables.py --write aesalign.h\n"
                 " * ) from Python %s (unicodedata %s) and the regex module %s\n"
                 " * (Unicode of the regex module: see --report).  Ranges are inclusive and sorted. */"
                 % (sys.version.split()[0], unicodedata.unidata_version, regex.__version__))
    parts.append(c_ranges("aes__tok_letter_ranges", to_ranges(t["letter"]),
                          "[\\p{L}] of the regex module under IGNORECASE"))
    parts.append(c_ranges("aes__tok_number_ranges", to_ranges(t["number"]),
                          "[\\p{N}] of the regex module under IGNORECASE"))
    parts.append(c_ranges("aes__tok_regex_space_ranges", to_ranges(t["regex_space"]),
                          "\\s of the regex module"))
    parts.append(c_ranges("aes__tok_py_space_ranges", to_ranges(t["py_space"]),
                          "str.isspace() (what str.strip() removes)"))
    parts.append(c_ranges("aes__tok_unmatched_ranges", to_ranges(t["unmatched"]),
                          "characters no alternative of the CLIP pattern matches (skipped)"))
    parts.append(c_ranges("aes__tok_cased_ranges", to_ranges(cased),
                          "cased and not case-ignorable (final-sigma rule of str.lower)"))
    parts.append(c_ranges("aes__tok_case_ignorable_ranges", to_ranges(ignorable),
                          "case-ignorable (final-sigma rule of str.lower)"))
    out = ["/* str.lower(): code points first..last (every stride-th) map to cp + delta (%d runs) */"
           % len(runs),
           "static const int32_t aes__tok_lower_runs[][4] = {"]
    line = "   "
    for a, b, d, s in runs:
        item = " {0x%X,0x%X,%d,%d}," % (a, b, d, s)
        if len(line) + len(item) > 110:
            out.append(line)
            line = "   "
        line += item
    out.append(line)
    out.append("};")
    parts.append("\n".join(out))
    parts.append("/* str.lower() mappings to two code points */\n"
                 "static const uint32_t aes__tok_lower_full[][3] = {%s};"
                 % ", ".join("{0x%X,0x%X,0x%X}" % (cp, v[0], v[1]) for cp, v in full))
    parts.append("/* html.unescape: numeric references 0x80..0x9F are read as Windows-1252 */\n"
                 "static const uint16_t aes__tok_html_cp1252[32] = {\n    %s};"
                 % ", ".join("0x%X" % c for c in cp1252))
    parts.append(c_ranges("aes__tok_html_dropped_ranges", dropped,
                          "html.unescape: numeric references to these code points give ''"))
    # Entities: "name=HEX[,HEX]" separated by spaces, sorted by name (strcmp
    # order, since names are ASCII); '*' after the name marks the legacy names
    # that also match without ';'.  Chunks stay under C99's 4095-char minimum.
    chunks, cur = [], ""
    for e in entities:
        if len(cur) + len(e) + 1 > 3000:
            chunks.append(cur)
            cur = ""
        cur += e + " "
    chunks.append(cur)
    lines = ["/* html.entities.html5, %d names with ';' (%d of them legacy, '*': they also match\n"
             " * without ';').  \"name=HEX[,HEX] \" entries, sorted by name. */" %
             (len(entities), sum(1 for e in entities if "*=" in e)),
             "static const char *const aes__tok_html_entity_chunks[] = {"]
    for c in chunks:
        for i in range(0, len(c), 100):
            piece = c[i:i + 100]
            lines.append('    "%s"%s' % (piece, "," if i + 100 >= len(c) else ""))
    lines.append("};")
    parts.append("\n".join(lines))
    parts.append(c_getter())
    parts.append(END)
    return "\n".join(parts) + "\n", t


def report(t):
    letters, numbers = set(t["letter"]), set(t["number"])
    dl = [cp for cp in all_chars() if (cp in letters) != unicodedata.category(chr(cp)).startswith("L")]
    dn = [cp for cp in all_chars() if (cp in numbers) != unicodedata.category(chr(cp)).startswith("N")]
    print("regex module %s vs unicodedata %s:" % (regex.__version__, unicodedata.unidata_version))
    print("  \\p{L} differs from category L* on %d code points (e.g. %s)"
          % (len(dl), " ".join("U+%04X" % c for c in dl[:8])))
    print("  \\p{N} differs from category N* on %d code points (e.g. %s)"
          % (len(dn), " ".join("U+%04X" % c for c in dn[:8])))
    print("  unassigned in unicodedata among those: %d"
          % sum(1 for c in dl + dn if unicodedata.category(chr(c)) == "Cn"))
    print("  unmatched by every class: %s" % " ".join("U+%04X" % c for c in t["unmatched"]))
    extra = sorted(set(t["py_space"]) - set(t["regex_space"]))
    print("  str.isspace but not regex \\s: %s" % " ".join("U+%04X" % c for c in extra))


def main():
    ap = argparse.ArgumentParser(description="generate the C tokenizer's character tables")
    ap.add_argument("--write", metavar="HEADER", help="replace the table block in HEADER")
    ap.add_argument("--report", action="store_true", help="print the checks only")
    args = ap.parse_args()
    text, t = generate()
    if args.report:
        report(t)
        print("table source: %d bytes" % len(text))
        return
    if args.write:
        with open(args.write, encoding="utf-8") as f:
            src = f.read()
        a, b = src.find(BEGIN), src.find(END)
        if a < 0 or b < a:
            sys.exit("%s has no %s ... %s block" % (args.write, BEGIN, END))
        src = src[:a] + text.rstrip("\n") + src[b + len(END):]
        with open(args.write, "w", encoding="utf-8") as f:
            f.write(src)
        print("wrote the tables into %s (%d bytes of table source)" % (args.write, len(text)))
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
