#!/usr/bin/env python3
"""rephrase.py - fill aesalign's query-expansion cache with an LLM (arXiv 2406.09397, stage 1).

    OPENAI_BASE_URL=https://host/v1 OPENAI_API_KEY=... OPENAI_MODEL=name \\
        python3 tools/rephrase.py QUERIES.txt expansions.tsv

QUERIES.txt holds one query per line (or "QID<TAB>query", as `aesalign search
--queries` reads).  Every query not yet in expansions.tsv is sent to any
OpenAI-compatible /chat/completions endpoint, and the answer is added as a line
"query<TAB>rephrased", the cache `aesalign search --expansions FILE` reads.  The
cache is rewritten atomically after every answer, so an interrupted run keeps what
it got and the next run asks only for the rest.

The paper's observation: a retrieval model only sees what the query says, while a
person asking for "a cat" expects a good picture of a cat.  An LLM can make those
implicit expectations explicit (light, composition, detail, style) without
changing what is asked for.

--style picks the prompt.  The paper compares several rewrite styles; the prompts
below are ours, written after the styles its tables name (its exact prompts are
not public):
  rewrite     (default) one sentence of at most 40 words making the implicit
              aesthetic expectations explicit -- fits CLIP's 77-token context
  detailed    a detailed description of the ideal picture (longer; CLIP reads
              its first 77 tokens)
  aspects     a list of k aspects of a beautiful picture of it (--aspects K,
              default 5), joined as "aspect; aspect; ..."
  keywords    a keyword dictionary, aspect: keywords (subject, lighting, colour,
              composition, style, mood), flattened to "key: value; ..."
  reorganise  the query itself reorganised into a clear, well-formed description,
              adding only the quality words it implies
The cache's first line records the style (and k); a cache of another style is
refused, so rephrasings of two styles never mix (use one file per style).

Environment: OPENAI_BASE_URL (default https://api.openai.com/v1), OPENAI_API_KEY
(may be empty for local servers), OPENAI_MODEL (or --model NAME).  Options:
--style NAME (above); --aspects K; --dry-run prints the requests instead of
sending them; --limit N stops after N queries; --temperature T (default 0.2).
Standard library only.  tests/test_llm_tools.py runs it against a stand-in
server on 127.0.0.1.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

_ROLE = ("You rewrite image-search queries for a text-to-image retrieval engine (CLIP). "
         "Keep everything the user asked for and add nothing that changes the subject. ")

STYLES = {
    "rewrite": (  # the original prompt, word for word
        "You rewrite image-search queries for a text-to-image retrieval engine (CLIP). "
        "Keep everything the user asked for, add nothing that changes the subject, and make "
        "explicit the aesthetic expectations a person implicitly has for a beautiful, "
        "high-quality picture of it: lighting, composition, colour, detail, mood and a fitting "
        "photographic or artistic style. Answer with one sentence of at most 40 words, no "
        "quotes, no explanations."
    ),
    "detailed": (
        _ROLE + "Write a detailed description of the ideal, beautiful, high-quality picture the "
        "user is looking for: the subject as asked, then lighting, composition, colour, detail, "
        "mood and a fitting photographic or artistic style. Answer with one paragraph of at most "
        "80 words, no quotes, no explanations."
    ),
    "aspects": (
        _ROLE + "List the {k} most important aspects that would make a picture of it beautiful and "
        "high-quality (for example lighting, composition, colour, detail, mood, style), each as a "
        "short phrase that names the subject's qualities. Answer with exactly {k} phrases, one per "
        "line, no numbering, no explanations."
    ),
    "keywords": (
        _ROLE + "Describe the ideal beautiful, high-quality picture of it as a keyword dictionary: "
        "the keys subject, lighting, colour, composition, style and mood, each with one to four "
        "keywords. Answer with one JSON object of strings and nothing else."
    ),
    "reorganise": (
        _ROLE + "Reorganise the query into one clear, well-formed description of the picture: "
        "subject first, then its attributes and setting, adding only the quality words the query "
        "implies (for example 'beautiful', 'well-lit'). Answer with one sentence of at most 30 "
        "words, no quotes, no explanations."
    ),
}
STYLE_NAMES = ["rewrite", "detailed", "aspects", "keywords", "reorganise"]
SYSTEM_PROMPT = STYLES["rewrite"]


def system_prompt(style, k):
    return STYLES[style].format(k=k)


def flatten(style, text):
    """One line for the cache: lists joined with '; ', a keyword dictionary as 'key: value; ...'."""
    if style == "keywords":
        s = text.strip()
        if s.startswith("```"):
            s = s.strip("`")
            s = s[s.find("{"):] if "{" in s else s
        try:
            obj = json.loads(s[s.find("{"):s.rfind("}") + 1]) if "{" in s else None
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            parts = []
            for kk, v in obj.items():
                if isinstance(v, (list, tuple)):
                    v = ", ".join(str(x) for x in v)
                parts.append(f"{kk}: {v}")
            return clean("; ".join(parts))
        return clean(text)
    if style == "aspects":
        items = []
        for line in text.splitlines():
            line = line.strip().lstrip("-*\u2022").strip()
            while line[:1].isdigit():
                line = line[1:]
            line = line.lstrip(".):").strip()
            if line:
                items.append(line.rstrip(";,."))
        return clean("; ".join(items))
    return clean(text)


def key(q):
    """The lookup key aesalign uses: ASCII-lowercased, whitespace collapsed."""
    return " ".join(q.split()).lower()


def clean(text):
    return " ".join(text.replace("\t", " ").split()).strip().strip('"').strip()


def read_queries(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            out.append(line.split("\t", 1)[1] if "\t" in line else line)
    return out


def style_tag(style, k):
    return f"style {style}" + (f" k={k}" if style == "aspects" else "")


def read_cache(path):
    """(cache, the style tag of its first line or None)."""
    cache = {}
    tag = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f):
                line = line.rstrip("\r\n")
                if n == 0 and line.startswith("#") and "(style " in line:
                    tag = line[line.index("(style ") + 1:].rstrip(")")
                if line and not line.startswith("#") and "\t" in line:
                    q, r = line.split("\t", 1)
                    cache[key(q)] = (q, r)
    return cache, tag


def write_cache(path, cache, tag):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"# query<TAB>rephrased - written by tools/rephrase.py ({tag})\n")
        for q, r in cache.values():
            f.write(f"{clean(q)}\t{clean(r)}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def ask(base, api_key, model, query, temperature, system, retries=5):
    body = json.dumps({
        "model": model,
        "temperature": temperature,
        "messages": [{"role": "system", "content": system},
                     {"role": "user", "content": query}],
    }).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    url = base.rstrip("/") + "/chat/completions"
    for attempt in range(retries):
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                answer = json.load(resp)
            return answer["choices"][0]["message"]["content"]
        except urllib.error.HTTPError as e:
            if e.code in (429, 500, 502, 503, 504) and attempt + 1 < retries:
                time.sleep(2 ** attempt)
                continue
            raise SystemExit(f"rephrase.py: {url}: HTTP {e.code}: {e.read()[:300]!r}")
        except (urllib.error.URLError, TimeoutError) as e:
            if attempt + 1 < retries:
                time.sleep(2 ** attempt)
                continue
            raise SystemExit(f"rephrase.py: {url}: {e}")
    raise SystemExit("rephrase.py: no answer")


def main(argv):
    args = [a for a in argv[1:]]
    opts = {"--model": os.environ.get("OPENAI_MODEL"), "--limit": None, "--temperature": "0.2",
            "--style": "rewrite", "--aspects": "5"}
    dry = "--dry-run" in args
    args = [a for a in args if a != "--dry-run"]
    for name in list(opts):
        if name in args:
            i = args.index(name)
            opts[name] = args[i + 1]
            del args[i:i + 2]
    if len(args) != 2 or args[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    queries_path, cache_path = args
    style = opts["--style"]
    if style not in STYLES:
        print(f"rephrase.py: --style wants one of {', '.join(STYLE_NAMES)}", file=sys.stderr)
        return 2
    try:
        k = int(opts["--aspects"])
    except ValueError:
        k = 0
    if not 1 <= k <= 20:
        print("rephrase.py: --aspects wants a number from 1 to 20", file=sys.stderr)
        return 2
    system = system_prompt(style, k)
    tag = style_tag(style, k)
    base = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
    api_key = os.environ.get("OPENAI_API_KEY", "")
    model = opts["--model"]
    if not model and not dry:
        raise SystemExit("rephrase.py: set OPENAI_MODEL or pass --model NAME")
    limit = int(opts["--limit"]) if opts["--limit"] else None
    cache, cache_tag = read_cache(cache_path)
    if cache and (cache_tag or style_tag("rewrite", k)) != tag:
        print(f"rephrase.py: {cache_path} holds rephrasings of {cache_tag or style_tag('rewrite', k)}, not {tag}; "
              "use another file", file=sys.stderr)
        return 1
    todo = [q for q in dict.fromkeys(read_queries(queries_path)) if key(q) not in cache]
    if limit is not None:
        todo = todo[:limit]
    print(f"rephrase.py: {len(cache)} cached, {len(todo)} to ask", file=sys.stderr)
    for n, q in enumerate(todo, 1):
        if dry:
            print(json.dumps({"model": model, "system": system, "user": q}))
            continue
        r = flatten(style, ask(base, api_key, model, q, float(opts["--temperature"]), system) or "")
        if not r:
            print(f"rephrase.py: empty answer for {q!r}, skipped", file=sys.stderr)
            continue
        cache[key(q)] = (q, r)
        write_cache(cache_path, cache, tag)
        print(f"[{n}/{len(todo)}] {q}\t{r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
