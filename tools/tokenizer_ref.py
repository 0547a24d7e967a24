#!/usr/bin/python3
"""tokenizer_ref.py -- the project's own Python reference of CLIP's BPE tokenizer.

Written from the published algorithm of OpenAI CLIP's `simple_tokenizer.py`
(not copied from it).  It is the oracle the C tokenizer in aesalign.h is
tested against: this script writes tests/fixtures/tokenizer/cases.txt and
expected.txt, and the C test must reproduce every line id for id.

Usage (Debian's python3 with python3-regex: `apt-get install -y python3-regex`):

    /usr/bin/python3 tools/tokenizer_ref.py --fixtures          # rewrite the fixtures
    /usr/bin/python3 tools/tokenizer_ref.py "a photo of a cat"  # print 77 ids
    /usr/bin/python3 tools/tokenizer_ref.py --cut-fixture       # rewrite tests/fixtures/tokenizer/clip10k/

The pipeline, step by step (what clip.tokenize(texts, truncate=True) does):

  0. bytes -> str: the C API takes UTF-8 bytes.  Invalid UTF-8 is decoded the
     way Python's bytes.decode('utf-8', errors='replace') does it: every maximal
     invalid subsequence becomes one U+FFFD.  (The fixtures carry raw bytes as
     lone surrogates U+DC80..U+DCFF, Python's 'surrogateescape' convention.)
  1. basic_clean: OpenAI runs ftfy.fix_text first.  ftfy is not packaged for
     Debian, so BOTH references (this file and the C code) SKIP it.  For text
     that ftfy would change, our ids differ from clip.tokenize; the changes
     ftfy.fix_text makes by default are:
       - Unicode NFC normalisation ("e" + U+0301 -> "\u00e9"; Hangul jamo -> syllables);
       - uncurl_quotes: \u2018 \u2019 \u201c \u201d (and similar) -> ' and ",
         so "don\u2019t" gives the contraction 't only after ftfy;
       - fix_latin_ligatures: \ufb01 -> "fi", \ufb02 -> "fl", ...;
       - fix_character_width: fullwidth/halfwidth forms -> ASCII / normal
         width ("\uff21\uff22\uff23" -> "ABC", halfwidth katakana -> full);
       - fix_encoding: mojibake repair ("caf\u00c3\u00a9" -> "caf\u00e9");
       - a third HTML unescape when the text does not look like HTML;
       - fix_line_breaks (\r\n, U+2028 -> \n: no effect after whitespace_clean),
         remove_terminal_escapes, remove_control_chars (drops some C0/C1
         controls, U+FEFF, bidi/format controls), fix_surrogates.
     Then html.unescape(html.unescape(text)) (HTML5 named entities, with the
     standard's longest-prefix rule for the legacy names without ';', numeric
     references with the Windows-1252 remapping of 0x80-0x9F) and str.strip().
  2. whitespace_clean: regex \\s+ -> one space, then str.strip().
  3. str.lower() (full mapping: U+0130 -> "i\u0307"; final sigma rule).
  4. pre-tokenise with the `regex` module (IGNORECASE as CLIP compiles it):
       <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+
  5. each pre-token's UTF-8 bytes -> GPT-2's printable "byte alphabet"
     (bytes_to_unicode), '</w>' on the last symbol, rank-based BPE: repeatedly
     merge every occurrence (left to right) of the adjacent pair with the
     lowest rank in the merges list, until no adjacent pair has a rank.
  6. ids from the vocabulary: 256 byte symbols, the same 256 with '</w>', the
     48,894 merged strings in merges order, '<|startoftext|>' (49406) and
     '<|endoftext|>' (49407).  A pre-token that is exactly one of the two
     special strings maps to its id directly.
  7. [sot] + ids + [eot], cut to 77 with eot kept in slot 76, zero padding.
"""
import argparse
import gzip
import html
import json
import os
import random
import sys

try:
    import regex
except ImportError:  # pragma: no cover
    sys.exit("tokenizer_ref.py needs the `regex` module: apt-get install -y python3-regex")

CLIP_N_MERGES = 49152 - 256 - 2          # 48894 merges after the version header
CONTEXT_LENGTH = 77
PRETOKEN_PATTERN = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"
                    r"|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_MERGES = os.path.join(REPO, "..", "shared", "data", "bpe_simple_vocab_16e6.txt")
FIXTURE_DIR = os.path.join(REPO, "tests", "fixtures", "tokenizer")


def byte_alphabet():
    """GPT-2's reversible map from the 256 byte values to printable characters.

    Bytes that are already printable and not whitespace ('!'..'~', '\u00a1'..'\u00ac',
    '\u00ae'..'\u00ff') stand for themselves; the other 68 are given the code points
    256, 257, ... in increasing byte order.  Returned as a list of (byte, char)
    in vocabulary order (printables first), which is also the order of ids 0..255.
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1))
                 + list(range(0xAE, 0xFF + 1)))
    pairs = [(b, chr(b)) for b in printable]
    extra = 0
    for b in range(256):
        if b not in printable:
            pairs.append((b, chr(256 + extra)))
            extra += 1
    return pairs


class ClipTokenizer:
    def __init__(self, merges_path=DEFAULT_MERGES, n_merges=CLIP_N_MERGES):
        opener = gzip.open if merges_path.endswith(".gz") else open
        with opener(merges_path, "rb") as f:
            lines = f.read().decode("utf-8").split("\n")
        # Line 1 is a version header ('"bpe_simple_vocab_16e6.txt#version: 0.2').
        merge_lines = lines[1:1 + n_merges]
        merges = [tuple(line.split()) for line in merge_lines]
        alphabet = byte_alphabet()
        self.byte_to_char = {b: c for b, c in alphabet}
        self.char_to_byte = {c: b for b, c in alphabet}
        vocab = [c for _, c in alphabet]
        vocab += [c + "</w>" for c in vocab]
        vocab += ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        # As in a Python dict built from a list: a repeated string keeps its LAST id.
        self.encoder = {}
        for i, s in enumerate(vocab):
            self.encoder[s] = i
        self.decoder = {i: s for i, s in enumerate(vocab)}
        self.ranks = {}
        for r, m in enumerate(merges):
            self.ranks[m] = r
        self.sot = self.encoder["<|startoftext|>"]
        self.eot = self.encoder["<|endoftext|>"]
        self.pattern = regex.compile(PRETOKEN_PATTERN, regex.IGNORECASE)

    # -- text cleanup --------------------------------------------------------
    @staticmethod
    def clean(text):
        # ftfy.fix_text(text) is skipped: see the module docstring.
        text = html.unescape(html.unescape(text)).strip()
        text = regex.sub(r"\s+", " ", text).strip()
        return text.lower()

    # -- BPE on one pre-token -------------------------------------------------
    def bpe(self, token):
        """token: a string over the byte alphabet.  Returns its list of symbols."""
        if token in ("<|startoftext|>", "<|endoftext|>"):
            return [token]
        symbols = list(token[:-1]) + [token[-1] + "</w>"]
        while len(symbols) > 1:
            best_rank, best_pair = None, None
            for pair in zip(symbols, symbols[1:]):
                r = self.ranks.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank, best_pair = r, pair
            if best_pair is None:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best_pair:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def encode_text(self, text):
        """BPE ids of a str, without sot/eot."""
        ids = []
        for piece in self.pattern.findall(self.clean(text)):
            token = "".join(self.byte_to_char[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self.bpe(token))
        return ids

    def encode_bytes(self, data):
        return self.encode_text(data.decode("utf-8", errors="replace"))

    def tokenize(self, data, context_length=CONTEXT_LENGTH):
        """clip.tokenize(text, truncate=True) for one text given as UTF-8 bytes."""
        ids = [self.sot] + self.encode_bytes(data) + [self.eot]
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = self.eot
        return ids + [0] * (context_length - len(ids))

    def decode(self, ids):
        text = "".join(self.decoder[i] for i in ids)
        raw = bytes(self.char_to_byte[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ")


# -- fixture cases -------------------------------------------------------------

def _handwritten_cases():
    """Return a list of byte strings covering the tricky parts one by one."""
    s = []
    add = lambda t: s.append(t.encode("utf-8", "surrogateescape") if isinstance(t, str) else t)
    # Plain captions.
    for t in ["a photo of a cat", "a diagram", "a dog", "A Photo Of A Cat", "a photo of a dog.",
              "a close-up photo of a red rose in the rain",
              "Sunset over the mountains, oil painting by an unknown artist",
              "high quality, 4k, trending on artstation", "a beautiful landscape with a lake and trees",
              "an aesthetic photograph of a minimalist living room", "blurry low-quality jpeg of a parking lot",
              "The quick brown fox jumps over the lazy dog", "portrait of a woman, 85mm, f/1.8, bokeh",
              "a black and white photo of the empire state building", "two dogs playing in the snow",
              "a bowl of ramen with chopsticks", "A PAINTING OF A SHIP IN A STORM", "mIxEd CaSe TeXt",
              "hello world", "hello", "world", "photography", "antidisestablishmentarianism",
              "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
              "x", "I", "a", "ab", "zz", "qwxz", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "ababababababab"]:
        add(t)
    # Punctuation runs and symbols.
    for t in ["hello, world!", "wait... what?!", "!!!", "?!?!?!", "----", "a--b", "(parenthesis)",
              "[brackets] {braces} <angles>", "email@example.com", "https://example.com/path?q=1&x=2",
              "#hashtag @mention", "$100 & 50% off", "C++ and C#", "a/b\\c|d", "~`^*_+=", "..", ".",
              "\"quoted\"", "'single quoted'", "it's", "'", "''", "'s", "'''s", "rock 'n' roll",
              ":-) ;-) :D", "<|startoftext|>", "<|endoftext|>", "a <|endoftext|> b",
              "<|STARTOFTEXT|>hello<|endoftext|>", "<|startoftext|><|endoftext|>", "<|endoftext",
              "<|ſtartoftext|>", "<|endoftext|>!", "x<|endoftext|>y"]:
        add(t)
    # Digits: one token per digit.
    for t in ["1234", "0", "2024-01-15", "3.14159", "1,000,000", "a1b2c3", "12abc34", "4k", "1080p",
              "\u0661\u0662\u0663 arabic-indic digits", "\u0967\u0968\u0969 devanagari digits",
              "\u00bd \u00b2 \u2167 \u2460 roman and circled", "\uff11\uff12\uff13 fullwidth digits",
              "\U0001d7d8\U0001d7d9 math digits"]:
        add(t)
    # Contractions, also in upper case (lowercased before the split).
    for t in ["it's", "don't", "we're", "they've", "i'm", "you'll", "he'd", "IT'S", "DON'T", "WE'RE",
              "THEY'VE", "I'M", "YOU'LL", "HE'D", "It'S", "the dog's bone", "'re'd'll'm've't's",
              "o'clock", "'tis", "rock'n'roll", "don\u2019t (curly)", "it\u2019s", "can't won't shan't",
              "'ſ", "dog'ſ"]:
        add(t)
    # Accented Latin and special case mappings.
    for t in ["caf\u00e9", "CAF\u00c9", "cafe\u0301 (combining)", "pi\u00f1ata", "PI\u00d1ATA",
              "stra\u00dfe", "STRASSE \u1e9e", "\u0130stanbul", "\u0130", "i\u0307", "\u00c5ngstr\u00f6m",
              "\u212bngstr\u00f6m (angstrom sign)", "na\u00efve r\u00e9sum\u00e9", "\u0141\u00f3d\u017a",
              "\u010cesk\u00fd Krumlov", "\u00c6sir \u00d8re", "\u0152uvre", "\u0131 dotless",
              "\u212a kelvin", "\u01c5 \u01c4 \u01c6 digraphs", "\u1e9b\u0323", "\u0345 ypogegrammeni",
              "a\u0345b", "\u03b1\u0345", "\ufb01 ligature \ufb02", "\u2126 ohm"]:
        add(t)
    # Greek (with final sigma), Cyrillic, CJK, Arabic, Hindi, others.
    for t in ["\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3", "\u03a3", "\u03a3\u03a3", "A\u03a3",
              "A\u03a3B", "A\u03a3.", "A'\u03a3", "A\u03a3'", "A\u03a3'B", "\u0391\u0301\u03a3",
              "\u03ba\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u03ba\u03cc\u03c3\u03bc\u03b5",
              "\u0393\u0395\u0399\u0391 \u03a3\u039f\u03a5 \u039a\u039f\u03a3\u039c\u0395",
              "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!", "\u041c\u041e\u0421\u041a\u0412\u0410",
              "\u0451\u0436\u0438\u043a \u0401\u0416\u0418\u041a", "\u4e00\u5f20\u732b\u7684\u7167\u7247",
              "\u6771\u4eac\u30bf\u30ef\u30fc", "\u3072\u3089\u304c\u306a \u30ab\u30bf\u30ab\u30ca",
              "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
              "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
              "\u05e9\u05dc\u05d5\u05dd", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
              "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0", "\u0531\u0532\u0533 armenian",
              "\u13a0\u13a1 cherokee \uab70", "\U00010400\U00010428 deseret", "\U0001e900 adlam",
              "\U00020000\U0002a6d6 cjk ext b", "\U00031350 cjk ext h", "\U00011f04 kawi",
              "a cat \u732b \u043a\u043e\u0442 \u03b3\u03ac\u03c4\u03b1 \u0642\u0637\u0629 \u092c\u093f\u0932\u094d\u0932\u0940",
              "photo\u5199\u771fphoto", "abc\u0430\u0431\u0432abc"]:
        add(t)
    # Emoji.
    for t in ["\U0001f600", "I love it \u2764\ufe0f", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family",
              "\U0001f44d\U0001f3fd thumbs", "\U0001f1fa\U0001f1f8 flag", "\U0001f3f3\ufe0f\u200d\U0001f308",
              "cat\U0001f431dog\U0001f436", "\U0001f525\U0001f525\U0001f525", "#\ufe0f\u20e3 keycap",
              "\u2600\ufe0f sunny \u2614", "\U0001f9d1\U0001f3ff\u200d\U0001f680"]:
        add(t)
    # HTML entities.
    for t in ["fish &amp; chips", "&lt;b&gt;bold&lt;/b&gt;", "it&#39;s", "it&#x27;s", "a&nbsp;b", "&quot;hi&quot;",
              "&amp;amp;", "&amp;amp;amp;", "&amp;lt;", "&amp", "&amp x", "&ampx", "&ampfoo;", "&notit;",
              "&notin;", "&hellip;", "&hellip", "&eacute;t&eacute;", "&Eacute;", "&EACUTE;", "&copy 2024",
              "&#169;", "&#xA9;", "&#XA9;", "&#0;", "&#128;", "&#x80;", "&#150;", "&#13;x", "&#1;x",
              "&#x110000;", "&#xD800;", "&#65;&#66", "&#", "&#x", "&#;", "&;", "&", "&&", "& amp;",
              "&nosuchentity;", "&nbsp&nbsp", "&NotNestedGreaterGreater;", "&nvlt;",
              "&bne;", "&ThickSpace;", "&fjlig;", "&" + "a" * 40, "&#" + "9" * 30 + ";",
              "&#x" + "f" * 30 + ";", "&#65279;bom", "&#xfffe;", "&#x1FFFF;", "&#xFDD0;",
              "&lt;|endoftext|&gt;", "&ampamp;", "&amp;#39;", "&amp;#x27;"]:
        add(t)
    # Whitespace.
    for t in ["", " ", "   ", "\t", "\n", "\r\n", " \t\n\x0b\x0c\r ", "a  b", "a\tb", "a\nb",
              "  leading and trailing  ", "tabs\t\tand\n\nnewlines", "a\u00a0b", "a\u3000b", "a\u2028b",
              "\u2003em space\u2003", "\x1cfile sep\x1f", "a\x1cb", "a\x85b", "\u200bzero width\u200b",
              "\ufeffbom", "a\u200db", "\u180emongolian"]:
        add(t)
    # Control characters, NULs and invalid UTF-8 (raw bytes).
    for t in [b"nul\x00inside", b"\x00", b"\x00\x00 \x00", b"\x01\x02\x03", b"\x7f", b"bad \xff byte",
              b"\x80", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xe2\x82(", b"\xe2\x82\xac", b"\xed\xa0\x80",
              b"\xf0\x9f\x98", b"\xf0\x9f\x98\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe0\x80\xaf",
              b"\xf8\x88\x80\x80\x80", b"caf\xe9 latin-1", b"\xfe\xff", b"a\xc2b", b"\xef\xbb\xbfbom",
              b"ok \xe6\x97\xa5\xe6\x9c text"]:
        add(t)
    # Long inputs: truncation keeps eot in slot 76.
    add("a photo of a cat " * 40)
    add("word " * 74)
    add("word " * 75)
    add("word " * 76)
    add("1234567890" * 20)
    add("x" * 5000)
    add("\U0001f600" * 100)
    add(" ".join(["supercalifragilistic"] * 30))
    return s


def _random_cases(n, seed=20240611):
    """Random strings drawn from many scripts and character classes, so the
    C tables (letters, numbers, whitespace, lowercase) are exercised widely."""
    rng = random.Random(seed)
    pools = [
        (0x20, 0x7E), (0x80, 0xFF), (0x100, 0x24F), (0x250, 0x2FF), (0x300, 0x36F), (0x370, 0x3FF),
        (0x400, 0x52F), (0x530, 0x58F), (0x590, 0x6FF), (0x900, 0x9FF), (0xE00, 0xE7F), (0x10A0, 0x10FF),
        (0x1100, 0x11FF), (0x13A0, 0x13FF), (0x1E00, 0x1FFF), (0x2000, 0x206F), (0x2070, 0x218F),
        (0x2190, 0x23FF), (0x2460, 0x24FF), (0x2C00, 0x2C7F), (0x3000, 0x30FF), (0x4E00, 0x4EFF),
        (0xA640, 0xA69F), (0xA720, 0xA7FF), (0xAC00, 0xACFF), (0xFB00, 0xFB4F), (0xFE70, 0xFEFF),
        (0xFF00, 0xFFEF), (0x10400, 0x1044F), (0x1D400, 0x1D7FF), (0x1E900, 0x1E95F), (0x1F300, 0x1FAFF),
        (0x20000, 0x200FF), (0x31350, 0x313FF), (0x11F00, 0x11F5F), (0xE0000, 0xE007F),
    ]
    special = ["'s", "'T", "'Re", "'VE", "'m", "'LL", "'d", "&amp;", "&lt;", "&#39;", "&nbsp;", "\u03a3",
               "\u0130", "\u017f", "\u0345", " ", "  ", "\t", "\n", "<|endoftext|>", "1", "42", "Ab"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 14)):
            if rng.random() < 0.25:
                parts.append(rng.choice(special))
            else:
                lo, hi = rng.choice(pools)
                k = rng.randint(1, 6)
                chars = []
                while len(chars) < k:
                    cp = rng.randint(lo, hi)
                    if 0xD800 <= cp <= 0xDFFF:
                        continue
                    chars.append(chr(cp))
                parts.append("".join(chars))
        out.append("".join(parts).encode("utf-8"))
    # A few with random raw bytes (mostly invalid UTF-8).
    for _ in range(20):
        out.append(bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 24))))
    return out


def write_fixtures(tok, directory=FIXTURE_DIR, n_random=200):
    os.makedirs(directory, exist_ok=True)
    cases = _handwritten_cases() + _random_cases(n_random)
    with open(os.path.join(directory, "cases.txt"), "w", encoding="ascii", newline="\n") as f:
        for data in cases:
            # One JSON string per line, ASCII only; raw (invalid) bytes appear
            # as lone surrogates \udc80..\udcff (Python's surrogateescape).
            f.write(json.dumps(data.decode("utf-8", "surrogateescape"), ensure_ascii=True) + "\n")
    with open(os.path.join(directory, "expected.txt"), "w", encoding="ascii", newline="\n") as f:
        for data in cases:
            f.write(" ".join(str(i) for i in tok.tokenize(data)) + "\n")
    # gzip fixtures for the C inflater: a stored block, a fixed-Huffman block,
    # and dynamic-Huffman blocks (mtime 0 so the bytes are reproducible).
    small = b"hello hello hello world, the merges file is gzip-compressed\n" * 3
    with open(os.path.join(directory, "cases.txt"), "rb") as f:
        cases_bytes = f.read()
    for name, data in (("small.txt", small), ("stored.gz", gzip.compress(small, 0, mtime=0)),
                       ("fixed.gz", gzip.compress(small, 9, mtime=0)),
                       ("cases.txt.gz", gzip.compress(cases_bytes, 9, mtime=0))):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
    print("wrote %d cases to %s" % (len(cases), directory))


# -- the clean-clone fixture: CLIP's first N merges -----------------------------

CUT_DIR = os.path.join(FIXTURE_DIR, "clip10k")
CUT_MERGES = 10000

# Long texts whose ids are kept whole (no sot/eot, no truncation): the first
# is the paragraph tests/test_tokenizer.c repeats to check that the ids of a
# long text are the ids of its whitespace-separated parts.
LONG_TEXTS = [
    "A photograph of a quiet harbour at dawn, small fishing boats resting on still water, "
    "soft pink light over the hills; an old man mends his nets while gulls circle overhead. "
    "Award-winning, 35mm film, high detail, trending on ArtStation (2019) & more!! ",
    "a photo of a cat " * 40,
    "x" * 5000,
    " ".join(["supercalifragilistic"] * 30),
    "1234567890" * 20,
    "\U0001f600" * 100,
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis " * 8,
]


def _check_tables_match():
    """The C character tables were made by tools/gen_unicode_tables.py with one
    Python and one regex module (named in aesalign.h); ids written with other
    versions can differ on the newest Unicode letters.  Refuse to write then."""
    import unicodedata
    header = os.path.join(REPO, "aesalign.h")
    with open(header, encoding="utf-8") as f:
        text = f.read()
    m = regex.search(r"from Python (\S+) \(unicodedata (\S+)\) and the regex module (\S+)", text)
    have = (sys.version.split()[0], unicodedata.unidata_version, regex.__version__)
    if m and tuple(m.groups()) != have:
        sys.exit("the C tables come from Python %s, unicodedata %s, regex %s; this is %s, %s, %s "
                 "(use Debian's /usr/bin/python3 with python3-regex)" % (m.groups() + have))


def write_cut_fixture(merges_path, n_merges=CUT_MERGES, directory=CUT_DIR):
    """Writes directory/merges.txt: the version header and the first n_merges
    merges of merges_path, byte for byte; then the ids of every case of
    cases.txt (77-id format, one line each: expected.txt) and the whole ids of
    LONG_TEXTS (long_cases.txt, long_expected.txt), computed by a tokenizer
    built from that cut file alone.  A BPE with a shorter merges list is a
    smaller but complete BPE: sot and eot are 512 + n_merges and one more."""
    _check_tables_match()
    opener = gzip.open if merges_path.endswith(".gz") else open
    with opener(merges_path, "rb") as f:
        lines = f.read().split(b"\n")
    if len(lines) < n_merges + 1:
        sys.exit("%s has fewer than %d merges" % (merges_path, n_merges))
    os.makedirs(directory, exist_ok=True)
    cut = os.path.join(directory, "merges.txt")
    with open(cut, "wb") as f:
        f.write(b"\n".join(lines[:n_merges + 1]) + b"\n")
    tok = ClipTokenizer(cut, n_merges=n_merges)
    assert len(tok.ranks) == n_merges and tok.sot == 512 + n_merges and tok.eot == tok.sot + 1
    with open(os.path.join(FIXTURE_DIR, "cases.txt"), encoding="ascii") as f:
        cases = [json.loads(line).encode("utf-8", "surrogateescape") for line in f if line.strip()]
    with open(os.path.join(directory, "expected.txt"), "w", encoding="ascii", newline="\n") as f:
        for data in cases:
            f.write(" ".join(str(i) for i in tok.tokenize(data)) + "\n")
    with open(os.path.join(directory, "long_cases.txt"), "w", encoding="ascii", newline="\n") as f:
        for t in LONG_TEXTS:
            f.write(json.dumps(t, ensure_ascii=True) + "\n")
    with open(os.path.join(directory, "long_expected.txt"), "w", encoding="ascii", newline="\n") as f:
        for t in LONG_TEXTS:
            f.write(" ".join(str(i) for i in tok.encode_bytes(t.encode("utf-8"))) + "\n")
    print("wrote %s: %d merges, %d cases, %d long texts" % (directory, n_merges, len(cases), len(LONG_TEXTS)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--merges", default=DEFAULT_MERGES, help="merges file (.txt or .gz)")
    ap.add_argument("--fixtures", action="store_true", help="rewrite tests/fixtures/tokenizer/")
    ap.add_argument("--cut-fixture", type=int, metavar="N", nargs="?", const=CUT_MERGES,
                    help="write tests/fixtures/tokenizer/clip10k/ from the first N merges of --merges "
                         "(default %d)" % CUT_MERGES)
    ap.add_argument("--raw", action="store_true", help="print the BPE ids without sot/eot/padding")
    ap.add_argument("--decode", action="store_true", help="also print the decoded text")
    ap.add_argument("texts", nargs="*")
    args = ap.parse_args()
    if args.cut_fixture is not None:
        write_cut_fixture(args.merges, args.cut_fixture)
        if not args.fixtures and not args.texts:
            return
    tok = ClipTokenizer(args.merges)
    if args.fixtures:
        write_fixtures(tok)
    for t in args.texts:
        data = os.fsencode(t)
        ids = tok.encode_bytes(data) if args.raw else tok.tokenize(data)
        print(" ".join(str(i) for i in ids))
        if args.decode:
            print(tok.decode([i for i in ids if i]))


if __name__ == "__main__":
    main()
