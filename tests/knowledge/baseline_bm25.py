#!/usr/bin/env python3
"""A naive lexical baseline for the knowledge evaluation set: NOT the evaluator.

It only calibrates how hard questions.jsonl is for plain keyword retrieval, so that a
later retriever's numbers can be read against something. Passages: Markdown split at
#/##/### headings, HTML <main> split at h1-h3, text split at blank lines; each passage
is prefixed with its page's first line. Tokens: lower-case words minus a few stopwords,
with crude suffix stripping. BM25 with k1 = 1.2, b = 0.75. Follow-ups are queried with the
previous visitor message appended. Metrics as in README.md (hit@k, MRR over the top 10).

    python3 tests/knowledge/baseline_bm25.py [-v]   # -v lists the questions missed at rank 3
"""
import html
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
STOP = set("""a an the and or but if of to in on at for from by with is are was be been do does did
i me my we our you your it its they them this that what which who when where why how can could
will would should not no so than then there any all some just im ive dont cant u""".split())


def stem(w):
    for suf in ("ing", "ed", "es", "s"):
        if len(w) > 4 and w.endswith(suf):
            return w[: -len(suf)]
    return w


def tok(text):
    return [stem(w) for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOP]


def passages():
    out = []
    for p in sorted((HERE / "corpus").rglob("*")):
        if not p.is_file():
            continue
        raw = p.read_text(encoding="utf-8")
        if p.suffix == ".html":
            main = re.search(r"<main[^>]*>(.*?)</main>", raw, re.S).group(1)
            parts = [html.unescape(re.sub(r"<[^>]+>", " ", s)) for s in re.split(r"(?=<h[1-3])", main)]
        elif p.suffix == ".md":
            parts = re.split(r"(?m)^(?=#{1,3} )", raw)
        else:
            parts = re.split(r"\n\s*\n", raw)
        parts = [s for s in parts if s.strip()]
        title = parts[0].strip().split("\n")[0]
        out += [(p.relative_to(HERE / "corpus").as_posix(), title + "\n" + s) for s in parts]
    return out


def main():
    ps = passages()
    docs = [Counter(tok(s)) for _, s in ps]
    n_docs = len(docs)
    avg = sum(sum(d.values()) for d in docs) / n_docs
    df = Counter(w for d in docs for w in d)

    def score(q, d):
        length, s = sum(d.values()), 0.0
        for w in tok(q):
            if w in d:
                idf = math.log(1 + (n_docs - df[w] + 0.5) / (df[w] + 0.5))
                s += idf * d[w] * 2.2 / (d[w] + 1.2 * (0.25 + 0.75 * length / avg))
        return s

    norm = lambda t: " ".join(t.split())
    qs = [json.loads(line) for line in (HERE / "questions.jsonl").open(encoding="utf-8") if line.strip()]
    h1 = h3 = mrr = 0.0
    missed = []
    for q in qs:
        query = q["question"] + (" " + q["history"][0] if q.get("history") else "")
        top = sorted(range(n_docs), key=lambda i: -score(query, docs[i]))[:10]
        rank = next((k + 1 for k, i in enumerate(top) if norm(q["answer"]) in norm(ps[i][1])), None)
        if rank:
            mrr += 1 / rank
            h1 += rank == 1
            h3 += rank <= 3
        if not rank or rank > 3:
            missed.append(f"{q['id']} [{q['kind']}] {q['question']!r} -> top: {ps[top[0]][0]}")
    n = len(qs)
    print(f"{n_docs} passages, {n} questions: hit@1 {h1 / n:.3f}  hit@3 {h3 / n:.3f}  MRR {mrr / n:.3f}")
    if "-v" in sys.argv:
        print("\n".join(missed))


if __name__ == "__main__":
    main()
