#!/usr/bin/env python3
"""Offline tests of tools/judge.py and tools/rephrase.py (run by test_retrieval.c).

A stand-in OpenAI-compatible server on 127.0.0.1 plays the LLM:
  * image requests (the judge): it decodes the PNG data URLs of "Set 1" and "Set 2"
    and calls the brighter set better ("similar" within 8 grey levels) -- a rule
    the test knows -- except for queries that ask it to misbehave: "biased ..."
    always answers set 1 (so the two orders disagree), "garbage ..." answers
    prose, "flaky ..." fails its first request with HTTP 500;
  * text requests (the rephraser): it echoes the query and a hash of the system
    prompt, so the test sees which prompt was sent.
Prints "ok NAME" / "FAIL NAME: why" lines; exit status 0 when all passed.
"""
import base64
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
sys.dont_write_bytecode = True
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import contextlib
import io
from importlib import util

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
JUDGE = os.path.join(ROOT, "tools", "judge.py")
REPHRASE = os.path.join(ROOT, "tools", "rephrase.py")
failures = []


def load(path, name):
    spec = util.spec_from_file_location(name, path)
    mod = util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_main(mod, argv, env):
    """mod.main(argv) in this process (no interpreter start-up): (status, stdout, stderr)."""
    saved = dict(os.environ)
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = mod.main(argv)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 1
                if not isinstance(e.code, int):
                    err.write(str(e.code))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return rc, out.getvalue(), err.getvalue()


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL {what}")
    return cond


# ---- tiny grey PNGs --------------------------------------------------------------

def png_grey(level, w=6, h=5):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + bytes([level]) * w for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def png_mean(data):
    """Mean grey level of an 8-bit greyscale PNG with filter 0 rows (what png_grey writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        t = data[pos + 4:pos + 8]
        d = data[pos + 8:pos + 8 + n]
        if t == b"IHDR":
            w = struct.unpack(">I", d[:4])[0]
        elif t == b"IDAT":
            idat += d
        pos += 12 + n
    raw = zlib.decompress(idat)
    px = [b for i, b in enumerate(raw) if i % (w + 1) != 0]
    return sum(px) / len(px)


# ---- the stand-in server ---------------------------------------------------------

class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []          # query text of every request received
        self.flaky_failed = False
        self.block_at = None        # request number (1-based) that hangs until released
        self.release = threading.Event()
        self.blocked = threading.Event()


def judge_rule(state, query, sets):
    if query.startswith("biased"):
        return json.dumps({"better": "1", "reason": "the first set is always better"})
    if query.startswith("garbage"):
        return "Both sets have their charm; I would rather not choose."
    m1 = sum(sets[0]) / len(sets[0])
    m2 = sum(sets[1]) / len(sets[1])
    if abs(m1 - m2) < 8:
        return json.dumps({"better": "similar", "reason": f"equally bright ({m1:.0f} vs {m2:.0f})"})
    better = "1" if m1 > m2 else "2"
    return "```json\n" + json.dumps({"better": better, "reason": f"brighter: {max(m1, m2):.0f}"}) + "\n```"


def prompt_hash(text):
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def make_handler(state):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def reply(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:
                pass

        def do_POST(self):
            if not self.path.endswith("/chat/completions"):
                return self.reply(404, {"error": "not found"})
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            system = req["messages"][0]["content"]
            content = req["messages"][1]["content"]
            if isinstance(content, str):  # rephrase.py
                text = f"{content} rephrased with prompt {prompt_hash(system)}"
                with state.lock:
                    state.requests.append(content)
                return self.reply(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})
            query, sets, cur = None, [[], []], None
            for part in content:
                if part["type"] == "text":
                    m = re.match(r'Query: "(.*)"$', part["text"])
                    if m:
                        query = m.group(1)
                    if part["text"].startswith("Set 1"):
                        cur = 0
                    elif part["text"].startswith("Set 2"):
                        cur = 1
                elif part["type"] == "image_url":
                    url = part["image_url"]["url"]
                    sets[cur].append(png_mean(base64.b64decode(url.split(",", 1)[1])))
            with state.lock:
                state.requests.append(query)
                n = len(state.requests)
                flaky = query.startswith("flaky") and not state.flaky_failed
                if flaky:
                    state.flaky_failed = True
            if state.block_at is not None and n == state.block_at:
                state.blocked.set()
                state.release.wait(30)
                return self.reply(503, {"error": "interrupted"})
            if flaky:
                return self.reply(500, {"error": "temporary"})
            return self.reply(200, {"choices": [{"message": {"role": "assistant",
                                                             "content": judge_rule(state, query, sets)}}]})
    return H


def start_server():
    state = State()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, state


# ---- the judge -------------------------------------------------------------------

QUERIES = [  # qid, text, A's grey levels, B's grey levels, expected verdict (A's side)
    ("q1", "a cat on a sofa", [200, 180, 160], [60, 50, 40], "win"),
    ("q2", "a dog in the snow", [30, 40, 50], [220, 210, 200], "loss"),
    ("q3", "an old tree", [100, 100, 100], [104, 102, 100], "similar"),
    ("q4", "biased bridge at night", [10, 20, 30], [240, 240, 240], "inconsistent"),
    ("q5", "garbage garden", [90, 90, 90], [20, 20, 20], "no_verdict"),
    ("q6", "flaky flowers", [250, 250, 240], [80, 80, 80], "win"),
]


def write_inputs(d):
    os.makedirs(os.path.join(d, "img"))
    with open(os.path.join(d, "queries.txt"), "w") as f:
        for qid, text, *_ in QUERIES:
            f.write(f"{qid}\t{text}\n")
    # A: `aesalign search --queries` result records (paths relative to --root);
    # B: JSON lines with the query id, and one result beyond --k that must not be shown
    with open(os.path.join(d, "a.tsv"), "w") as fa, open(os.path.join(d, "b.jsonl"), "w") as fb:
        for qid, text, la, lb, _ in QUERIES:
            for sysname, levels in (("a", la), ("b", lb)):
                for r, lv in enumerate(levels + ([0] if sysname == "b" else []), 1):
                    name = f"img/{qid}_{sysname}{r}.png"
                    with open(os.path.join(d, name), "wb") as f:
                        f.write(png_grey(lv))
                    if sysname == "a":
                        fa.write(f"result\t{qid}\t{r}\t{name}\t{0.5 - 0.01 * r:.6f}\t{5.0:.4f}\n")
                    else:
                        fb.write(json.dumps({"rank": r, "path": name, "semantic": 0.3, "aesthetic": 5.0,
                                             "final": 0.4, "query": qid}) + "\n")
    # a query only A has: skipped
    with open(os.path.join(d, "a.tsv"), "a") as fa:
        fa.write("result\tq1\t4\timg/q1_a3.png\t0.1\t5.0\n")


def run_judge(d, base, *extra, wait=True):
    env = {"OPENAI_BASE_URL": base, "OPENAI_API_KEY": "", "OPENAI_MODEL": "stand-in"}
    argv = [JUDGE, os.path.join(d, "a.tsv"), os.path.join(d, "b.jsonl"), "--queries",
            os.path.join(d, "queries.txt"), "--root", d, "--k", "3", "--out", os.path.join(d, "verdicts.tsv"),
            "--backoff", "0.01", "--names", "ours,baseline"] + list(extra)
    if not wait:  # a separate process, to be killed
        return subprocess.Popen([sys.executable] + argv, env=dict(os.environ, **env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return run_main(load(JUDGE, "judge"), argv, env)


def read_verdicts(d):
    with open(os.path.join(d, "verdicts.tsv")) as f:
        lines = f.read().splitlines()
    head = lines[0].split("\t")
    return {row[0]: dict(zip(head, row)) for row in (l.split("\t") for l in lines[1:])}


def test_judge(tmp):
    d = os.path.join(tmp, "judge")
    write_inputs(d)
    srv, state = start_server()
    base = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    try:
        # 1. interrupted: the 4th request (q2, B first) hangs and the process is killed
        state.block_at = 4
        p = run_judge(d, base, wait=False)
        check(state.blocked.wait(30), "judge: the 4th request never came")
        p.kill()
        p.communicate(timeout=30)
        state.release.set()
        cache = os.path.join(d, "verdicts.tsv.cache.json")
        with open(cache) as f:
            data = json.load(f)
        check(len(data["answers"]) == 3, f"judge: {len(data['answers'])} answers cached before the kill, want 3")
        check(not [n for n in os.listdir(d) if ".tmp" in n], "judge: a temporary file was left behind")
        # 2. resumed: only the 9 missing questions are asked, plus the retry after the 500
        state.block_at = None
        before = len(state.requests)
        rc, out, err = run_judge(d, base)
        asked = state.requests[before:]
        check(rc == 0, f"judge: resumed run failed ({rc}): {err}")
        check(len(asked) == 10, f"judge: resumed run sent {len(asked)} requests, want 9 + 1 retry")
        check(asked.count("flaky flowers") == 3, "judge: the 500 was not retried exactly once")
        check("a cat on a sofa" not in asked, "judge: an answer in the cache was asked again")
        v = read_verdicts(d)
        for qid, text, _, _, want in QUERIES:
            got = v.get(qid, {}).get("verdict")
            check(got == want, f"judge: {qid} ({text}): verdict {got}, want {want}")
        check(v["q1"]["reason_a_first"].startswith("brighter"), "judge: the reason was not kept")
        check("charm" in v["q5"]["answer_a_first"], "judge: the garbage answer was not recorded")
        # 4 consistent: 2 wins, 1 similar, 1 loss
        check("| ours vs baseline | 0.500 | 0.250 | 0.250 | 4 |" in out, f"judge: table:\n{out}")
        check("1 inconsistent, 1 no verdict" in out, f"judge: counts:\n{out}")
        # 3. everything cached: no request, same verdicts
        before = len(state.requests)
        rc, out2, err = run_judge(d, base)
        check(rc == 0 and len(state.requests) == before, "judge: a fully cached run sent requests")
        check(out2 == out, "judge: the cached run printed another table")
        # 4. a changed image is asked again (the cache keys hold the image hashes)
        with open(os.path.join(d, "img", "q3_b1.png"), "wb") as f:
            f.write(png_grey(250))
        before = len(state.requests)
        rc, out3, err = run_judge(d, base)
        check(rc == 0 and len(state.requests) == before + 2, "judge: a changed image was not asked again")
        check(read_verdicts(d)["q3"]["verdict"] == "loss", "judge: q3 after the change")
        # 5. a server that keeps failing: the run stops with status 1, the cache intact
        os.unlink(os.path.join(d, "img", "q3_b1.png"))
        rc, out4, err = run_judge(d, "http://127.0.0.1:9/v1", "--retries", "2")
        check(rc == 1, f"judge: a missing image should stop the run (got {rc})")
    finally:
        srv.shutdown()
    print("ok judge: swapped order, 500 retried, garbage = no verdict, kill + resume, cache")


def test_judge_formats(tmp):
    d = os.path.join(tmp, "formats")
    os.makedirs(d)
    judge = load(JUDGE, "judge")
    with open(os.path.join(d, "plain.tsv"), "w") as f:
        f.write("rank\tpath\tsemantic\taesthetic\tfinal\n# query: red car\n2\tb.jpg\t0.3\t5\t0.4\n1\ta.jpg\t0.3\t5\t0.5\n"
                "# query: blue sea\n1\tc.jpg\t0.2\t6\t0.3\n")
    r = judge.read_results(os.path.join(d, "plain.tsv"), {}, None)
    check(list(r) == ["red car", "blue sea"] and r["red car"][1] == [(1, "a.jpg"), (2, "b.jpg")],
          f"judge: plain TSV read as {r}")
    for text, want in (('{"better": "2", "reason": "x"}', "2"), ('Sure! {"better": "Set 1"}', "1"),
                       ('{"better": "tie"}', "similar"), ('{"better": "3"}', None), ("1", None),
                       ('{"better": true}', None), ("{not json}", None), (None, None), ('["1"]', None)):
        check(judge.parse_answer(text)[0] == want, f"judge: parse_answer({text!r}) = {judge.parse_answer(text)}")
    check(judge.combine('{"better":"1"}', '{"better":"2"}') == "win", "judge: combine win")
    check(judge.combine('{"better":"1"}', '{"better":"1"}') == "inconsistent", "judge: combine position bias")
    check(judge.combine('{"better":"similar"}', "??") == "no_verdict", "judge: combine malformed")
    print("ok judge formats: plain TSV, answer parsing, combination")


# ---- the rephraser's styles --------------------------------------------------------

def test_rephrase_styles(tmp):
    d = os.path.join(tmp, "rephrase")
    os.makedirs(d)
    q = os.path.join(d, "q.txt")
    with open(q, "w") as f:
        f.write("q1\ta cat\nq2\ta bridge at dusk\n")
    rp = load(REPHRASE, "rephrase")
    env = {"OPENAI_API_KEY": "", "OPENAI_MODEL": "stand-in"}
    styles = ["rewrite", "detailed", "aspects", "keywords", "reorganise"]
    check(sorted(rp.STYLES) == sorted(styles), f"rephrase: styles {sorted(rp.STYLES)}")
    prompts = {}
    for st in styles:
        rc, out, err = run_main(rp, [REPHRASE, q, os.path.join(d, "x.tsv"), "--style", st, "--dry-run",
                                     "--aspects", "3"], env)
        if not check(rc == 0, f"rephrase: --style {st} --dry-run failed: {err}"):
            continue
        req = json.loads(out.splitlines()[0])
        prompts[st] = req["system"]
        check(req["user"] == "a cat", f"rephrase: the user message is {req['user']!r}")
    check(len(set(prompts.values())) == len(styles), "rephrase: two styles share a prompt")
    check("exactly 3 phrases" in prompts.get("aspects", ""), "rephrase: --aspects not in the prompt")
    rc, out, err = run_main(rp, [REPHRASE, q, os.path.join(d, "x.tsv"), "--style", "poem", "--dry-run"], env)
    check(rc == 2 and "rewrite" in err, "rephrase: an unknown style was accepted")
    # answers flattened to one line
    check(rp.flatten("keywords", '```json\n{"subject": "cat", "lighting": ["soft", "golden"]}\n```')
          == "subject: cat; lighting: soft, golden", "rephrase: keyword dictionary not flattened")
    check(rp.flatten("aspects", "1. soft light\n2) calm pose\n- warm colours.") == "soft light; calm pose; warm colours",
          "rephrase: aspect list not flattened")
    # against the stand-in: the default style is the original prompt; a cache of
    # another style is refused; cached queries are not asked again
    srv, state = start_server()
    env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    try:
        cache = os.path.join(d, "kw.tsv")
        rc, out, err = run_main(rp, [REPHRASE, q, cache, "--style", "keywords"], env)
        check(rc == 0, f"rephrase: keywords run failed: {err}")
        with open(cache) as f:
            lines = f.read().splitlines()
        check(lines[0].startswith("#") and "style keywords" in lines[0], f"rephrase: cache header {lines[0]!r}")
        check(f"a cat\ta cat rephrased with prompt {prompt_hash(prompts.get('keywords', ''))}" in lines,
              f"rephrase: cache {lines}")
        rc, out, err = run_main(rp, [REPHRASE, q, cache, "--style", "detailed"], env)
        check(rc != 0 and "keywords" in err, "rephrase: a cache of another style was extended")
        n = len(state.requests)
        rc, out, err = run_main(rp, [REPHRASE, q, cache, "--style", "keywords"], env)
        check(rc == 0 and len(state.requests) == n, "rephrase: a cached query was asked again")
        rc, out, err = run_main(rp, [REPHRASE, q, os.path.join(d, "default.tsv"), "--dry-run"], env)
        check(json.loads(out.splitlines()[0])["system"] == prompts.get("rewrite") == rp.SYSTEM_PROMPT,
              "rephrase: the default style is not the original prompt")
    finally:
        srv.shutdown()
    print("ok rephrase: styles, their prompts, flattening, the cache's style")


def main():
    tmp = tempfile.mkdtemp(prefix="aes_llm_tools_")
    t0 = time.time()
    try:
        test_judge(tmp)
        test_judge_formats(tmp)
        test_rephrase_styles(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_llm_tools.py: {len(failures)} failed ({time.time() - t0:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
