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
changing what is asked for.  The prompt below asks for exactly that, in one short
sentence that fits CLIP's 77-token context.

Environment: OPENAI_BASE_URL (default https://api.openai.com/v1), OPENAI_API_KEY
(may be empty for local servers), OPENAI_MODEL (or --model NAME).  Options:
--dry-run prints the requests instead of sending them; --limit N stops after N
queries; --temperature T (default 0.2).  Standard library only.  This is the only
part of aesalign that uses a network, and no test runs it.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

SYSTEM_PROMPT = (
    "You rewrite image-search queries for a text-to-image retrieval engine (CLIP). "
    "Keep everything the user asked for, add nothing that changes the subject, and make "
    "explicit the aesthetic expectations a person implicitly has for a beautiful, "
    "high-quality picture of it: lighting, composition, colour, detail, mood and a fitting "
    "photographic or artistic style. Answer with one sentence of at most 40 words, no "
    "quotes, no explanations."
)


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


def read_cache(path):
    cache = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\r\n")
                if line and not line.startswith("#") and "\t" in line:
                    q, r = line.split("\t", 1)
                    cache[key(q)] = (q, r)
    return cache


def write_cache(path, cache):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("# query<TAB>rephrased - written by tools/rephrase.py\n")
        for q, r in cache.values():
            f.write(f"{clean(q)}\t{clean(r)}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def ask(base, api_key, model, query, temperature, retries=5):
    body = json.dumps({
        "model": model,
        "temperature": temperature,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT},
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
            return clean(answer["choices"][0]["message"]["content"])
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
    opts = {"--model": os.environ.get("OPENAI_MODEL"), "--limit": None, "--temperature": "0.2"}
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
    base = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
    api_key = os.environ.get("OPENAI_API_KEY", "")
    model = opts["--model"]
    if not model and not dry:
        raise SystemExit("rephrase.py: set OPENAI_MODEL or pass --model NAME")
    limit = int(opts["--limit"]) if opts["--limit"] else None
    cache = read_cache(cache_path)
    todo = [q for q in dict.fromkeys(read_queries(queries_path)) if key(q) not in cache]
    if limit is not None:
        todo = todo[:limit]
    print(f"rephrase.py: {len(cache)} cached, {len(todo)} to ask", file=sys.stderr)
    for n, q in enumerate(todo, 1):
        if dry:
            print(json.dumps({"model": model, "system": SYSTEM_PROMPT, "user": q}))
            continue
        r = ask(base, api_key, model, q, float(opts["--temperature"]))
        if not r:
            print(f"rephrase.py: empty answer for {q!r}, skipped", file=sys.stderr)
            continue
        cache[key(q)] = (q, r)
        write_cache(cache_path, cache)
        print(f"[{n}/{len(todo)}] {q}\t{r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
