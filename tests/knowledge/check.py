#!/usr/bin/env python3
"""Checks the knowledge evaluation set in tests/knowledge.

Run from anywhere:  python3 tests/knowledge/check.py
Exits non-zero and lists every problem when a rule is broken.

Rules checked:
  corpus   at least 60 pages; at least 8 .html and 3 .txt; every page 250-1,200 words
           (HTML: the text inside <main>); Markdown pages start with a '# ' title;
           HTML pages have <header>, <nav>, <aside>, <footer>, <script> and <main> with an <h1>.
  questions  at least 120; unique ids; known kind; the file exists; the answer is 4-20
           words on one line, has no markup, occurs exactly once in the whole corpus
           (also case-insensitively) and that occurrence is in the named file (for HTML,
           inside <main> and not across a tag); followups carry a two-message history;
           at least 50 distinct files.
It also reports how many questions share few content words with the section that
answers them (a rough measure of how much the set relies on paraphrase).
"""

import html
import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
QUESTIONS = HERE / "questions.jsonl"
KINDS = {"fact", "procedure", "followup", "paraphrase", "negative"}

STOP = set("""a an the and or but if of to in on at for from by with without about into over
under is are was were be been being am do does did done have has had i me my we our you your
he she it its they them their this that these those what which who whom whose when where why
how can could will would should shall may might must not no yes so than then there here any
all some more most much many very just also too only own same such each other again once
up down out off get got go going want need like one two please hi hello thanks thank im ive
dont doesnt cant isnt whats hows u ur pls plz still ok okay really something anything""".split())


def words(text):
    return re.findall(r"[a-z0-9£€]+(?:[.,'][a-z0-9]+)*", text.lower())


def main_text(raw):
    m = re.search(r"<main[^>]*>(.*?)</main>", raw, re.S)
    return m.group(1) if m else ""


def page_text(path, raw):
    if path.suffix == ".html":
        return html.unescape(re.sub(r"<[^>]+>", " ", main_text(raw)))
    return raw


def sections(path, raw):
    """Splits a page into (heading, text) sections, the way a passage splitter would."""
    if path.suffix == ".html":
        body = main_text(raw)
        parts = re.split(r"(?=<h[1-3][^>]*>)", body)
        return [html.unescape(re.sub(r"<[^>]+>", " ", p)) for p in parts if p.strip()]
    if path.suffix == ".md":
        return [p for p in re.split(r"(?m)^(?=#{1,3} )", raw) if p.strip()]
    return [p for p in re.split(r"\n(?=-{5,}\n|[A-Z][A-Z ,'/-]{6,}\n)", raw) if p.strip()]


def main():
    problems = []
    pages = sorted(p for p in CORPUS.rglob("*") if p.is_file())
    raws = {p: p.read_text(encoding="utf-8") for p in pages}
    rel = {p: p.relative_to(CORPUS).as_posix() for p in pages}

    fmt = Counter(p.suffix for p in pages)
    total_words = 0
    for p in pages:
        raw = raws[p]
        n = len(page_text(p, raw).split())
        total_words += n
        if not 250 <= n <= 1200:
            problems.append(f"{rel[p]}: {n} words, want 250-1200")
        if p.suffix == ".md" and not raw.startswith("# "):
            problems.append(f"{rel[p]}: Markdown page does not start with a '# ' title")
        if p.suffix == ".html":
            for tag in ("<header", "<nav", "<aside", "<footer", "<script", "<main", "<h1"):
                if tag not in raw:
                    problems.append(f"{rel[p]}: no {tag}>")
        if p.suffix not in (".md", ".html", ".txt"):
            problems.append(f"{rel[p]}: unexpected format")
    if len(pages) < 60:
        problems.append(f"{len(pages)} pages, want at least 60")
    if fmt[".html"] < 8:
        problems.append(f"{fmt['.html']} HTML pages, want at least 8")
    if fmt[".txt"] < 3:
        problems.append(f"{fmt['.txt']} text pages, want at least 3")

    qs = []
    for i, line in enumerate(QUESTIONS.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            qs.append(json.loads(line))
        except json.JSONDecodeError as e:
            problems.append(f"questions.jsonl line {i}: not JSON ({e})")

    ids = Counter(q.get("id") for q in qs)
    for qid, n in ids.items():
        if n > 1:
            problems.append(f"{qid}: id used {n} times")

    by_rel = {rel[p]: p for p in pages}
    low_overlap = 0
    for q in qs:
        qid = q.get("id", "?")
        for field in ("id", "question", "file", "answer", "kind"):
            if not isinstance(q.get(field), str) or not q.get(field).strip():
                problems.append(f"{qid}: missing {field}")
        if q.get("kind") not in KINDS:
            problems.append(f"{qid}: unknown kind {q.get('kind')!r}")
        if q.get("kind") == "followup":
            h = q.get("history")
            if not (isinstance(h, list) and len(h) == 2 and all(isinstance(m, str) and m for m in h)):
                problems.append(f"{qid}: followup needs history [visitor message, assistant reply]")
        f, a = q.get("file", ""), q.get("answer", "")
        if f not in by_rel:
            problems.append(f"{qid}: file {f} not in corpus")
            continue
        n_words = len(a.split())
        if not 4 <= n_words <= 20:
            problems.append(f"{qid}: answer has {n_words} words, want 4-20")
        if "\n" in a or re.search(r"[<>&*`|#\[\]]|__", a):
            problems.append(f"{qid}: answer contains a line break or markup: {a!r}")
        hits = {r: raws[p].count(a) for p, r in rel.items() if a in raws[p]}
        hits_ci = sum(raws[p].lower().count(a.lower()) for p in pages)
        if sum(hits.values()) != 1 or hits_ci != 1:
            problems.append(f"{qid}: answer occurs {sum(hits.values())} times "
                            f"({hits_ci} ignoring case) in {sorted(hits)}, want once: {a!r}")
        elif f not in hits:
            problems.append(f"{qid}: answer is in {sorted(hits)}, not in {f}")
        path = by_rel[f]
        if path.suffix == ".html" and a not in main_text(raws[path]):
            problems.append(f"{qid}: answer is not inside <main> of {f}")
        # how many of the visitor's content words appear in the answering section?
        secs = [s for s in sections(path, raws[path]) if a in s]
        if secs:
            sw = set(words(secs[0]))
            qw = [w for w in words(q.get("question", "")) if w not in STOP and len(w) > 2]
            if qw and sum(w in sw for w in qw) / len(qw) <= 0.5:
                low_overlap += 1

    files = {q.get("file") for q in qs}
    if len(qs) < 120:
        problems.append(f"{len(qs)} questions, want at least 120")
    if len(files) < 50:
        problems.append(f"questions cover {len(files)} files, want at least 50")

    kinds = Counter(q.get("kind") for q in qs)
    print(f"pages: {len(pages)} ({', '.join(f'{n} {k[1:]}' for k, n in sorted(fmt.items()))}), "
          f"{total_words} words")
    print(f"questions: {len(qs)} ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), "
          f"{len(files)} distinct files")
    print(f"questions sharing at most half their content words with the answering section: "
          f"{low_overlap} of {len(qs)}")
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for p in problems:
            print("  " + p)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
