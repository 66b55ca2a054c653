"""Real sentence embeddings for the vector-index benchmark, built offline from text already on the machine.

    nice -n 19 python benchmarks/real_embeddings.py corpus            # sentences -> corpus.txt, queries.jsonl
    nice -n 19 python benchmarks/real_embeddings.py embed --workers 2 # resumable; run again to continue
    python benchmarks/real_embeddings.py status                       # sentences embedded so far

Why real text: random 384-d vectors have no cluster structure, the worst case for a graph index, and the
semantic cache never sees them; sentence embeddings have a low intrinsic dimension and behave differently.
No dataset download is allowed here, so the corpus is the prose that ships with the interpreter and the
installed packages: docstrings and comments of every Python file (standard library, site-packages,
Debian's python3), the text documentation in site-packages and /usr/share/doc, and the string fields of
JSONL datasets shipped in packages (fow-cache's conversations). It is split into sentences of 5-40 words,
filtered for prose (mostly letters, little code punctuation) and deduplicated case- and
whitespace-insensitively, then shuffled with a fixed seed so that any prefix is a random sample.

Queries (queries.jsonl, embedded first):
- `heldout`: sentences of the corpus that are never indexed (the last ones of the shuffled order); their
  neighbours are the corpus's other sentences on the same topic (the same idea reworded across projects,
  near-copies in forks and vendored files): what a cache lookup for a new question looks like.
- `neardup`: an indexed sentence (from the first 10,000, so it is indexed at every N) with a small edit -
  a word dropped, two neighbouring words swapped, case and punctuation changed: a repeated question.
- `pair`: fow-cache's labelled pairs, side b as the query; side a is appended to the corpus's index.

Embeddings: the cache's own embedder (`MiniLMEmbedder`, all-MiniLM-L6-v2, one torch thread per worker),
float32, in chunks of 10,000 (`emb_00000.npy` ...) under ~/.cache/otel-llmcost/bench/semantic1m/ (or
$OTEL_LLMCOST_BENCH_DIR). Chunk i belongs to worker i mod workers; a chunk is written to a temporary
file and renamed, so a killed run loses at most the chunks in flight and a rerun skips finished ones.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import html
import json
import multiprocessing as mp
import os
import random
import re
import sys
import sysconfig
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

CHUNK = 10_000
N_HELDOUT = 2_000
N_NEARDUP = 2_000
SEED = 20261
MIN_WORDS, MAX_WORDS = 5, 40

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_WS = re.compile(r"\s+")
_CODEY = re.compile(r"[{}<>=|\\`$@^~_*#]|::|\(\)|->|\.\w+\(|https?:")
_RST_MARKUP = re.compile(r":\w+:`([^`]*)`|``([^`]*)``|`([^`]*)`_*")


def bench_dir() -> Path:
    """Where the corpus and vectors live: big (GBs) and never committed."""
    default = Path.home() / ".cache" / "otel-llmcost" / "bench" / "semantic1m"
    path = Path(os.environ.get("OTEL_LLMCOST_BENCH_DIR", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- corpus --
def _prose(sentence: str) -> str | None:
    """The sentence cleaned, or None if it is not prose a user might write (code, tables, licences' caps)."""
    s = _RST_MARKUP.sub(lambda m: next(g for g in m.groups() if g is not None), sentence)
    s = _WS.sub(" ", s).strip().strip("-*#> ").removesuffix(" ::").strip()
    words = s.split(" ")
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    letters = sum(c.isalpha() for c in s)
    if letters < 0.75 * len(s.replace(" ", "")) or len(_CODEY.findall(s)) > 1:
        return None
    if s.isupper() or not s[0].isalpha():
        return None
    return s


def _paragraph_sentences(paragraph: str) -> Iterator[str]:
    for part in _SPLIT.split(_WS.sub(" ", paragraph).strip()):
        cleaned = _prose(part)
        if cleaned:
            yield cleaned


def _paragraphs(text: str) -> Iterator[str]:
    """Blank-line separated blocks, skipping doctest and indented (code) blocks."""
    block: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            if block:
                yield " ".join(block)
                block = []
            continue
        if stripped.startswith((">>>", "...", "$ ", "|", "+--", "==", "--", "..")) or line.startswith("    "):
            continue
        block.append(stripped)
    if block:
        yield " ".join(block)


def _python_file(path: str) -> list[str]:
    try:
        with open(path, "rb") as f:
            source = f.read(2_000_000)
        text = source.decode("utf-8", errors="replace")
    except OSError:
        return []
    out: list[str] = []
    # comments: runs of consecutive comment lines form one paragraph
    run: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not stripped.startswith("#!"):
            run.append(stripped.lstrip("#").strip())
        elif run:
            out.extend(_paragraph_sentences(" ".join(run)))
            run = []
    if run:
        out.extend(_paragraph_sentences(" ".join(run)))
    try:
        with warnings.catch_warnings():  # old files' escapes and literals: not our concern here
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return out
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                for para in _paragraphs(doc):
                    out.extend(_paragraph_sentences(para))
    return out


def _text_file(path: str) -> list[str]:
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read(4_000_000)
        else:
            with open(path, "rb") as f:
                raw = f.read(4_000_000)
    except (OSError, EOFError, gzip.BadGzipFile):
        return []
    if b"\0" in raw[:4096]:
        return []
    text = raw.decode("utf-8", errors="replace")
    out: list[str] = []
    if path.endswith(".jsonl"):
        for line in text.splitlines():
            try:
                out.extend(s for v in _strings(json.loads(line)) for s in _paragraph_sentences(v))
            except ValueError:
                continue
        return out
    for para in _paragraphs(text):
        out.extend(_paragraph_sentences(para))
    return out


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


_LINE_COMMENT = re.compile(r"^\s*//+!?\s?(.*)$")
_BLOCK_COMMENT = re.compile(r"/\*+(.*?)\*/", re.S)


def _c_like_file(path: str) -> list[str]:
    """Comments of Go, C/C++, Rust, JavaScript sources: `//` runs and `/* */` blocks."""
    try:
        with open(path, "rb") as f:
            text = f.read(2_000_000).decode("utf-8", errors="replace")
    except OSError:
        return []
    out: list[str] = []
    run: list[str] = []
    for line in text.splitlines():
        m = _LINE_COMMENT.match(line)
        if m:
            run.append(m.group(1))
        elif run:
            out.extend(s for para in _paragraphs("\n".join(run)) for s in _paragraph_sentences(para))
            run = []
    if run:
        out.extend(s for para in _paragraphs("\n".join(run)) for s in _paragraph_sentences(para))
    for block in _BLOCK_COMMENT.findall(text):
        lines = "\n".join(line.strip().lstrip("*").strip() for line in block.splitlines())
        out.extend(s for para in _paragraphs(lines) for s in _paragraph_sentences(para))
    return out


_HTML_DROP = re.compile(r"<(script|style|pre|code|nav|head)\b.*?</\1>", re.S | re.I)
_HTML_BLOCK = re.compile(r"</?(p|div|li|dd|dt|h\d|br|tr|td|th|section|table|ul|ol|blockquote)\b[^>]*>", re.I)
_HTML_TAG = re.compile(r"<[^>]+>")


def _html_file(path: str) -> list[str]:
    """Paragraph text of HTML documentation (code blocks and navigation dropped)."""
    try:
        with open(path, "rb") as f:
            text = f.read(4_000_000).decode("utf-8", errors="replace")
    except OSError:
        return []
    text = _HTML_BLOCK.sub("\n\n", _HTML_DROP.sub(" ", text))
    text = html.unescape(_HTML_TAG.sub("", text))
    return [s for para in re.split(r"\n\s*\n", text) for s in _paragraph_sentences(para)]


def _extract(path: str) -> list[str]:
    if path.endswith(".py"):
        return _python_file(path)
    if path.endswith(_C_LIKE):
        return _c_like_file(path)
    if path.endswith(".html"):
        return _html_file(path)
    return _text_file(path)


_TEXT_SUFFIXES = (".rst", ".md", ".txt", ".jsonl", ".rst.gz", ".md.gz", ".txt.gz", "changelog.gz", "NEWS.gz")
_C_LIKE = (".go", ".h", ".hpp", ".c", ".cc", ".cpp", ".rs", ".js", ".ts", ".java")
_SKIP_DIRS = {"testdata", "node_modules", "__pycache__", ".git"}


def _source_files() -> list[str]:
    roots = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]}
    roots |= {str(p) for p in Path("/usr/lib").glob("python3*")}
    roots |= {str(p) for p in Path("/root/.pyenv/versions").glob("*/lib/python*")}
    roots |= {str(p) for p in Path("/root/.rustup/toolchains").glob("stable-*/share/doc")}
    roots |= {"/usr/share/doc", "/usr/lib/google-cloud-sdk", "/usr/local/go/src", "/usr/lib/node_modules",
              str(Path.home() / "go" / "pkg" / "mod")}
    files: set[str] = set()
    for root in roots:
        for dirpath, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
            for name in names:
                if name.endswith((".py", ".html", *_C_LIKE, *_TEXT_SUFFIXES)) or name in ("README", "NEWS"):
                    files.add(os.path.join(dirpath, name))
    return sorted(files)


def _fow_pairs() -> list[dict[str, str]]:
    try:
        import fow_cache
    except ImportError:
        return []
    path = Path(fow_cache.__file__).parent / "data" / "pairs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{"a": r["a"], "b": r["b"], "same": bool(r["same_answer"]), "category": r["category"]} for r in rows]


def _near_duplicate(sentence: str, rng: random.Random) -> str:
    """A small edit of the sentence, the way a user repeats a question: drop, swap, case, punctuation."""
    words = sentence.split(" ")
    edit = rng.choice(("drop", "swap", "case", "punct"))
    if edit == "drop" and len(words) > 5:
        del words[rng.randrange(1, len(words))]
    elif edit == "swap" and len(words) > 3:
        i = rng.randrange(1, len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    elif edit == "case":
        return sentence.lower().rstrip(".!?")
    out = " ".join(words)
    return out.rstrip(".") + ("?" if out.endswith(".") else ".")


def build_corpus(workers: int) -> None:
    out_dir = bench_dir()
    t0 = time.perf_counter()
    files = _source_files()
    print(f"{len(files):,} files to read", file=sys.stderr, flush=True)
    seen: set[bytes] = set()
    sentences: list[str] = []
    with mp.Pool(workers) as pool:
        for done, found in enumerate(pool.imap_unordered(_extract, files, chunksize=64), 1):
            for s in found:
                key = hashlib.blake2b(_WS.sub(" ", s.lower()).rstrip(".!?").encode(), digest_size=12).digest()
                if key not in seen:
                    seen.add(key)
                    sentences.append(s)
            if done % 5000 == 0:
                print(f"{done:,} files, {len(sentences):,} sentences", file=sys.stderr, flush=True)
    sentences.sort()  # deterministic order whatever the pool's, then a seeded shuffle
    rng = random.Random(SEED)
    rng.shuffle(sentences)
    pairs = _fow_pairs()
    pair_a = {p["a"] for p in pairs}
    sentences = [s for s in sentences if s not in pair_a]
    heldout = sentences[-N_HELDOUT:]
    indexed = sentences[:-N_HELDOUT]
    queries: list[dict[str, object]] = [{"kind": "heldout", "text": s} for s in heldout]
    for src in rng.sample(range(min(CHUNK, len(indexed))), N_NEARDUP):
        queries.append({"kind": "neardup", "text": _near_duplicate(indexed[src], rng), "source": src})
    for p in pairs:
        queries.append({"kind": "pair", "text": p["b"], "a": p["a"], "same": p["same"], "category": p["category"]})
    (out_dir / "corpus.txt").write_text("\n".join(indexed) + "\n")
    (out_dir / "pairs_a.txt").write_text("\n".join(p["a"] for p in pairs) + "\n")
    with open(out_dir / "queries.jsonl", "w") as f:
        for q in queries:
            f.write(json.dumps(q) + "\n")
    meta = {"files": len(files), "sentences": len(indexed), "heldout": len(heldout), "pairs": len(pairs),
            "seconds": round(time.perf_counter() - t0)}
    (out_dir / "corpus.json").write_text(json.dumps(meta))
    print(json.dumps(meta), file=sys.stderr)


# -- embedding --
def _lines(path: Path) -> list[str]:
    return path.read_text().rstrip("\n").split("\n")


def _save(path: Path, vectors: object) -> None:
    import numpy as np

    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, np.asarray(vectors, dtype=np.float32))
    os.replace(tmp, path)


def _embed_worker(worker: int, workers: int, limit: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from otel_llmcost.cache.embedders import MiniLMEmbedder

    out_dir = bench_dir()
    embedder = MiniLMEmbedder(batch_size=128, num_threads=1)
    if worker == 0:
        for name, texts in (
            ("queries.npy", [json.loads(line)["text"] for line in _lines(out_dir / "queries.jsonl")]),
            ("pairs_a.npy", _lines(out_dir / "pairs_a.txt")),
        ):
            if not (out_dir / name).exists():
                _save(out_dir / name, embedder.embed(texts))
    corpus = _lines(out_dir / "corpus.txt")[:limit]
    for chunk in range(worker, (len(corpus) + CHUNK - 1) // CHUNK, workers):
        path = out_dir / f"emb_{chunk:05d}.npy"
        if path.exists():
            continue
        c0, t0 = time.process_time(), time.perf_counter()
        vectors = embedder.embed(corpus[chunk * CHUNK : (chunk + 1) * CHUNK])
        _save(path, vectors)
        print(
            json.dumps({"worker": worker, "chunk": chunk, "wall_s": round(time.perf_counter() - t0, 1),
                        "cpu_ms_per_sentence": round(1000 * (time.process_time() - c0) / len(vectors), 2),
                        "load": os.getloadavg()[0], "embedded": embedded_count(out_dir)}),
            file=sys.stderr, flush=True,
        )


def embedded_count(out_dir: Path) -> int:
    """Sentences in the unbroken run of finished chunks from chunk 0 (what the benchmark can load)."""
    n, chunk = 0, 0
    total = json.loads((out_dir / "corpus.json").read_text())["sentences"]
    while (out_dir / f"emb_{chunk:05d}.npy").exists():
        n = min(total, n + CHUNK)
        chunk += 1
    return n


def embed(workers: int, limit: int) -> None:
    procs = [mp.Process(target=_embed_worker, args=(w, workers, limit)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("corpus", "embed", "status"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=1_000_000, help="embed at most this many corpus sentences")
    args = ap.parse_args()
    if args.command == "corpus":
        build_corpus(args.workers)
    elif args.command == "embed":
        embed(args.workers, args.limit)
    else:
        out_dir = bench_dir()
        print(json.dumps({**json.loads((out_dir / "corpus.json").read_text()),
                          "embedded": embedded_count(out_dir)}))


if __name__ == "__main__":
    main()
