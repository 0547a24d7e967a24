#!/usr/bin/env python3
"""judge.py - compare two retrieval systems with a multimodal LLM as judge (arXiv 2406.09397).

    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_MODEL=name \\
        python3 tools/judge.py A.tsv B.tsv --queries QUERIES.txt --out verdicts.tsv

Besides its HPIR benchmark, the paper evaluates with a multimodal LLM (GPT-4V) as
judge: for each query the model sees the top results of two systems and says which
set is better, or that they are similar.  Each comparison is asked twice, with the
two sets in both orders, and only an answer that agrees with itself counts -- a
judge that prefers whatever comes first is not measuring anything.  The result is
the share of win / similar / loss of system A against system B over the
self-consistent comparisons.

Inputs: two result files of `aesalign search`, in any of
  * `aesalign search --queries` records: "result<TAB>QID<TAB>rank<TAB>path<TAB>final
    <TAB>aesthetic" (the query text then comes from --queries, lines "QID<TAB>query");
  * JSON lines, one object per result with rank, path, semantic, aesthetic, final and
    the query ("query", "qid" or "query_id"; an id found in --queries is replaced by
    its text);
  * the plain TSV "rank<TAB>path<TAB>semantic<TAB>aesthetic<TAB>final" with a
    "# query: TEXT" line before each list (or one query given by --query TEXT).
Relative image paths are looked up as given, then under --root DIR, then beside the
result file.  Queries present in only one file are skipped (and counted).

Outputs: a table on standard output (counts and rates) and --out, a TSV with one
line per query: qid, query, verdict (win, loss, similar, inconsistent, no_verdict),
the two raw answers (A shown first, B shown first) and the model's two reasons.
verdict is from A's side: win = A's set is better.  An answer that is not the JSON
object asked for counts as no verdict, never as a win.

Every answer is cached in --cache FILE (default: OUT.cache.json), keyed by the
model, the prompt, the query and the SHA-256 of every image in the order shown; the
file is rewritten atomically after every answer, so an interrupted run keeps what
it got and the next one asks only for the rest (a changed image is asked again).
HTTP 429 and 5xx answers and connection errors are retried with exponential
back-off (honouring Retry-After); when the retries run out the run stops, keeping
the cache.  Other HTTP errors (401, 404, ...) stop at once.

Environment: OPENAI_BASE_URL (default https://api.openai.com/v1), OPENAI_API_KEY
(may be empty for a local llama.cpp or vLLM server), OPENAI_MODEL (or --model).
Options:
  --k N            top results of each system shown (default 4)
  --queries FILE   QID<TAB>query lines (needed for `result` records)
  --query TEXT     the query of a plain single-query TSV
  --root DIR       where relative image paths are found
  --out FILE       the verdict TSV (required)
  --cache FILE     answer cache (default OUT.cache.json)
  --names A,B      names of the two systems in the table (default: the file names)
  --temperature T  default 0
  --retries N      attempts per request (default 6)
  --backoff S      first back-off in seconds, doubled each retry (default 1)
  --timeout S      per-request timeout (default 120)
  --limit N        ask at most N new questions, then stop (cache kept)
  --dry-run        print the requests (images elided) instead of sending them
Standard library only.  Like rephrase.py, it is the only kind of aesalign code that
uses a network; its test runs it against a stand-in server on 127.0.0.1.
"""
import base64
import hashlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

PROMPT_VERSION = "judge-v1"

SYSTEM_PROMPT = (
    "You judge image search results. You are given a search query and two sets of result "
    "images, Set 1 and Set 2, each the top results of a different search system in rank "
    "order. Decide which set is better overall, judging both how well the images match "
    "the query (accuracy) and how good they look (aesthetics: composition, lighting, "
    "colour, detail). If neither set is clearly better, answer similar. Answer with one "
    "JSON object and nothing else: "
    '{"better": "1" or "2" or "similar", "reason": "<one short sentence>"}'
)


class JudgeError(Exception):
    pass


class _Limit(Exception):
    pass


# ---- reading result files ---------------------------------------------------------

def read_queries(path):
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            if "\t" in line:
                qid, text = line.split("\t", 1)
            else:
                qid = text = line
            out[qid] = text
    return out


def read_results(path, queries, single_query):
    """Returns {qid: (query text, [(rank, path), ...] sorted by rank)} in file order."""
    lists = {}
    texts = {}
    current = single_query
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            where = f"{path}:{n}"
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                    rank = int(obj["rank"])
                    img = str(obj["path"])
                except (ValueError, KeyError, TypeError) as e:
                    raise JudgeError(f"{where}: not a result object ({e})")
                q = obj.get("query", obj.get("qid", obj.get("query_id", current)))
                if q is None:
                    raise JudgeError(f"{where}: a result object without a query (query, qid or query_id)")
                qid = str(q)
                text = queries.get(qid, qid)
            elif line.startswith("# query:"):
                current = line[len("# query:"):].strip()
                continue
            elif line.startswith("#"):
                continue
            elif line.startswith("result\t"):
                cols = line.split("\t")
                if len(cols) < 4:
                    raise JudgeError(f"{where}: a result record needs result, QID, rank, path")
                qid = cols[1]
                if qid not in queries:
                    raise JudgeError(f"{where}: query id {qid!r} is not in --queries (the judge needs the query text)")
                text = queries[qid]
                try:
                    rank = int(cols[2])
                except ValueError:
                    raise JudgeError(f"{where}: rank {cols[2]!r} is not a number")
                img = cols[3]
            else:
                cols = line.split("\t")
                if cols[0] == "rank":
                    continue  # header
                if len(cols) < 2:
                    raise JudgeError(f"{where}: expected rank<TAB>path...")
                if current is None:
                    raise JudgeError(f"{where}: a plain result list without a '# query:' line; pass --query TEXT")
                try:
                    rank = int(cols[0])
                except ValueError:
                    raise JudgeError(f"{where}: rank {cols[0]!r} is not a number")
                qid = text = current
                img = cols[1]
            lists.setdefault(qid, []).append((rank, img))
            texts[qid] = text
    return {q: (texts[q], sorted(lists[q])) for q in lists}


def resolve(img, roots):
    if os.path.isabs(img):
        return img
    for r in roots:
        p = os.path.join(r, img) if r else img
        if os.path.exists(p):
            return p
    return img


def mime_of(data):
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:2] == b"BM":
        return "image/bmp"
    return "application/octet-stream"


class Images:
    """Reads each image once: its data URL and SHA-256."""

    def __init__(self):
        self.seen = {}

    def get(self, path):
        if path not in self.seen:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise JudgeError(f"cannot read image {path}: {e.strerror}")
            url = f"data:{mime_of(data)};base64," + base64.b64encode(data).decode("ascii")
            self.seen[path] = (url, hashlib.sha256(data).hexdigest())
        return self.seen[path]


# ---- the question -----------------------------------------------------------------

def user_content(query, set1, set2, images):
    parts = [{"type": "text", "text": f'Query: "{query}"'}]
    for name, paths in (("Set 1", set1), ("Set 2", set2)):
        parts.append({"type": "text", "text": f"{name} ({len(paths)} images, best first):"})
        for p in paths:
            parts.append({"type": "image_url", "image_url": {"url": images.get(p)[0]}})
    parts.append({"type": "text", "text": "Which set is better for this query? Answer with the JSON object only."})
    return parts


def cache_key(model, query, set1, set2, images):
    h = json.dumps([PROMPT_VERSION, SYSTEM_PROMPT, model, query,
                    [images.get(p)[1] for p in set1], [images.get(p)[1] for p in set2]])
    return hashlib.sha256(h.encode("utf-8")).hexdigest()


def parse_answer(text):
    """("1" | "2" | "similar", reason), or (None, why) for anything else."""
    if not isinstance(text, str):
        return None, "no text"
    s = text.strip()
    m = re.search(r"\{.*\}", s, re.S)
    if not m:
        return None, "no JSON object"
    try:
        obj = json.loads(m.group(0))
    except ValueError:
        return None, "malformed JSON"
    if not isinstance(obj, dict):
        return None, "not an object"
    v = obj.get("better", obj.get("winner"))
    reason = obj.get("reason", "")
    reason = " ".join(str(reason).split()) if reason is not None else ""
    if isinstance(v, bool) or v is None:
        return None, "no 'better' field"
    v = str(v).strip().lower()
    v = {"set 1": "1", "set1": "1", "set 2": "2", "set2": "2", "tie": "similar", "same": "similar"}.get(v, v)
    if v not in ("1", "2", "similar"):
        return None, f"'better' is {v!r}"
    return v, reason


def combine(ans_ab, ans_ba):
    """The verdict from A's side: win / loss / similar, or inconsistent / no_verdict."""
    a, _ = parse_answer(ans_ab)
    b, _ = parse_answer(ans_ba)
    if a is None or b is None:
        return "no_verdict"
    first = {"1": "win", "2": "loss", "similar": "similar"}[a]    # A shown as set 1
    second = {"1": "loss", "2": "win", "similar": "similar"}[b]   # B shown as set 1
    return first if first == second else "inconsistent"


# ---- the endpoint -----------------------------------------------------------------

def ask(cfg, content):
    body = json.dumps({
        "model": cfg["model"],
        "temperature": cfg["temperature"],
        "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                     {"role": "user", "content": content}],
    }).encode()
    headers = {"Content-Type": "application/json"}
    if cfg["api_key"]:
        headers["Authorization"] = f"Bearer {cfg['api_key']}"
    url = cfg["base"].rstrip("/") + "/chat/completions"
    delay = cfg["backoff"]
    last = "no answer"
    for attempt in range(cfg["retries"]):
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        wait = delay
        try:
            with urllib.request.urlopen(req, timeout=cfg["timeout"]) as resp:
                raw = resp.read()
            try:
                answer = json.loads(raw)
                return answer["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                # the server answered, but not in the chat-completions shape: the
                # model's answer is unusable, which is no verdict, not an error
                return None
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}: {e.read()[:200]!r}"
            if e.code != 429 and e.code < 500:
                raise JudgeError(f"{url}: {last}")
            ra = e.headers.get("Retry-After") if e.headers else None
            if ra:
                try:
                    wait = max(wait, min(float(ra), 60.0))
                except ValueError:
                    pass
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            last = str(e)
        if attempt + 1 < cfg["retries"]:
            print(f"judge.py: {last}; retrying in {wait:g} s", file=sys.stderr)
            time.sleep(wait)
            delay *= 2
    raise JudgeError(f"{url}: {last} (after {cfg['retries']} attempts)")


# ---- the cache --------------------------------------------------------------------

def read_cache(path):
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except ValueError as e:
            raise JudgeError(f"{path}: not a judge cache ({e}); move it away to start over")
    if not isinstance(data, dict) or not isinstance(data.get("answers"), dict):
        raise JudgeError(f"{path}: not a judge cache")
    return data["answers"]


def write_atomic(path, text):
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_cache(path, answers):
    write_atomic(path, json.dumps({"format": "aesalign judge cache", "version": 1, "answers": answers},
                                  indent=0, sort_keys=True) + "\n")


# ---- main -------------------------------------------------------------------------

def tsv_field(s):
    return " ".join(str(s).replace("\t", " ").split())


def main(argv):
    args = list(argv[1:])
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    opts = {"--model": os.environ.get("OPENAI_MODEL"), "--k": "4", "--queries": None, "--query": None,
            "--root": None, "--out": None, "--cache": None, "--names": None, "--temperature": "0",
            "--retries": "6", "--backoff": "1", "--timeout": "120", "--limit": None}
    dry = "--dry-run" in args
    args = [a for a in args if a != "--dry-run"]
    pos = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in opts:
            if i + 1 >= len(args):
                print(f"judge.py: {a} needs a value", file=sys.stderr)
                return 2
            opts[a] = args[i + 1]
            i += 2
        elif a.startswith("--"):
            print(f"judge.py: unknown option {a} (see --help)", file=sys.stderr)
            return 2
        else:
            pos.append(a)
            i += 1
    if len(pos) != 2 or not opts["--out"]:
        print("usage: judge.py A_RESULTS B_RESULTS --out VERDICTS.tsv [options] (see --help)", file=sys.stderr)
        return 2
    try:
        k = int(opts["--k"])
        retries = max(1, int(opts["--retries"]))
        cfg = {"model": opts["--model"], "temperature": float(opts["--temperature"]),
               "base": os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
               "api_key": os.environ.get("OPENAI_API_KEY", ""), "retries": retries,
               "backoff": float(opts["--backoff"]), "timeout": float(opts["--timeout"])}
        limit = int(opts["--limit"]) if opts["--limit"] else None
    except ValueError as e:
        print(f"judge.py: bad number: {e}", file=sys.stderr)
        return 2
    if k < 1:
        print("judge.py: --k must be at least 1", file=sys.stderr)
        return 2
    if not cfg["model"] and not dry:
        print("judge.py: set OPENAI_MODEL or pass --model NAME", file=sys.stderr)
        return 2
    out = opts["--out"]
    cache_path = opts["--cache"] or out + ".cache.json"
    names = opts["--names"].split(",", 1) if opts["--names"] else [os.path.basename(p) for p in pos]
    if len(names) != 2:
        print("judge.py: --names wants A,B", file=sys.stderr)
        return 2
    try:
        queries = read_queries(opts["--queries"]) if opts["--queries"] else {}
        res = [read_results(p, queries, opts["--query"]) for p in pos]
        answers = read_cache(cache_path)
    except (JudgeError, OSError) as e:
        print(f"judge.py: {e}", file=sys.stderr)
        return 1
    roots = [""] + ([opts["--root"]] if opts["--root"] else [])
    common = [q for q in res[0] if q in res[1]]
    only = len(res[0]) + len(res[1]) - 2 * len(common)
    images = Images()
    rows = []
    asked = cached = 0
    stopped = None
    try:
        for qid in common:
            text = res[0][qid][0]
            sets = [[resolve(p, roots + [os.path.dirname(os.path.abspath(pos[s]))]) for _, p in res[s][qid][1][:k]]
                    for s in (0, 1)]
            got = []
            for first, second in ((0, 1), (1, 0)):
                key = cache_key(cfg["model"], text, sets[first], sets[second], images)
                if key in answers:
                    cached += 1
                else:
                    if dry:
                        content = user_content(text, sets[first], sets[second], images)
                        for part in content:
                            if part["type"] == "image_url":
                                part["image_url"]["url"] = part["image_url"]["url"][:40] + "..."
                        print(json.dumps({"model": cfg["model"], "system": SYSTEM_PROMPT, "user": content}))
                        got.append(None)
                        continue
                    if limit is not None and asked >= limit:
                        stopped = f"--limit {limit} reached"
                        raise _Limit()
                    ans = ask(cfg, user_content(text, sets[first], sets[second], images))
                    asked += 1
                    answers[key] = {"answer": ans, "query": text, "order": names[first] + " first",
                                    "model": cfg["model"]}
                    write_cache(cache_path, answers)
                got.append(answers[key]["answer"] if key in answers else None)
            verdict = combine(got[0], got[1])
            r1 = parse_answer(got[0])
            r2 = parse_answer(got[1])
            rows.append((qid, text, verdict, got[0], got[1], r1[1], r2[1]))
    except _Limit:
        pass
    except JudgeError as e:
        stopped = str(e)
    counts = {v: 0 for v in ("win", "similar", "loss", "inconsistent", "no_verdict")}
    for r in rows:
        counts[r[2]] += 1
    consistent = counts["win"] + counts["similar"] + counts["loss"]
    if not dry:
        lines = ["qid\tquery\tverdict\tanswer_a_first\tanswer_b_first\treason_a_first\treason_b_first\n"]
        for r in rows:
            lines.append("\t".join(tsv_field(x if x is not None else "") for x in r) + "\n")
        try:
            write_atomic(out, "".join(lines))
        except OSError as e:
            print(f"judge.py: cannot write {out}: {e}", file=sys.stderr)
            return 1
    print(f"judge: {names[0]} (A) vs {names[1]} (B), top {k}, model {cfg['model']}")
    print(f"queries: {len(rows)} judged of {len(common)} in both files ({only} in only one), "
          f"{consistent} consistent, {counts['inconsistent']} inconsistent, {counts['no_verdict']} no verdict")
    print("| A vs B | win | similar | loss | consistent |")
    print("|---|---|---|---|---|")
    if consistent:
        print(f"| {names[0]} vs {names[1]} | {counts['win'] / consistent:.3f} | {counts['similar'] / consistent:.3f} | "
              f"{counts['loss'] / consistent:.3f} | {consistent} |")
    else:
        print(f"| {names[0]} vs {names[1]} | - | - | - | 0 |")
    print(f"({asked} questions asked, {cached} answers from the cache {cache_path})",
          file=sys.stderr)
    if stopped:
        print(f"judge.py: stopped: {stopped}; the cache keeps every answer so far, run again to go on",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
