"""all-MiniLM-L6-v2 three ways on the same texts and batch size: sentence-transformers fp32 (the
serving encoder, the baseline), the int8 ONNX encoder (kind onnx-int8, version minilm-l6-v2-int8)
and, unless --no-fp32-onnx, the same ONNX export before quantisation (fp32, fused).

    python bench/encoder_speed.py                       # 2,000 chat messages + 500 BBC chunks, 5 repeats
    python bench/encoder_speed.py --repeats 3 --no-ndcg # speed and cosines only

Speed: each repeat encodes each group of texts with every encoder, the encoders' order rotating
from repeat to repeat (the machine is shared: interleaving spreads its load over all of them);
texts/s are medians over repeats and the ratio is the median of the per-repeat ratios to
sentence-transformers (target >= 2x for int8). Agreement: cosine of each text's vector to its fp32
sentence-transformers vector (median, 1st percentile, min). Quality: nDCG@10 on both judged sets by
exact dense search in memory (the set's records cut into the pipeline's 128/32-token chunks, a
record scored by its best chunk), for sentence-transformers and int8 (target: int8 within 0.01).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_database import log  # noqa: E402
from semindex.builders.sample_corpus import _iter_utterances, _load_chitchat_conversations  # noqa: E402
from semindex.chunking import ChunkingParameters, normalize_text, split_into_chunks  # noqa: E402
from semindex.data import SAMPLE_CORPUS_PATH  # noqa: E402
from semindex.encoders import MINILM_INT8_SPEC, MINILM_SPEC, load_encoder  # noqa: E402
from semindex.encoders import int8_onnx, registry  # noqa: E402
from semindex.encoders.onnx import OnnxEncoder  # noqa: E402
from semindex.judged_sets import JudgedSet, judged_document_paths, load_judged_sets  # noqa: E402
from semindex.relevance_metrics import ndcg_at_k  # noqa: E402

BASELINE = "sentence-transformers fp32"


def chat_messages(count: int) -> list[str]:
    """The first `count` distinct non-empty chitchat messages, conversation by conversation."""
    seen: dict[str, None] = {}
    for conversation in _load_chitchat_conversations().values():
        for _, utterance in _iter_utterances(conversation):
            text = utterance["text"].strip()
            if text:
                seen.setdefault(text, None)
                if len(seen) == count:
                    return list(seen)
    return list(seen)


def bbc_chunks(count: int) -> list[str]:
    """Mail-like prose: the bundled BBC articles' bodies cut into the pipeline's chunks."""
    chunks: list[str] = []
    with SAMPLE_CORPUS_PATH.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["connector_instance_id"] == "bbc":
                chunks.extend(split_into_chunks(normalize_text(record["fields"]["body"]), ChunkingParameters()))
                if len(chunks) >= count:
                    break
    return chunks[:count]


def fp32_onnx(batch_size: int, folder: Path) -> OnnxEncoder:
    """The export before quantisation, fused the same way (not cached: a few seconds)."""
    source = Path(registry.minilm_model_path())
    facts = int8_onnx.export_fp32(source, folder / "exported.onnx")
    with int8_onnx._quiet_onnxruntime_tools():
        int8_onnx.optimise(folder / "exported.onnx", folder / "model.onnx", facts["num_heads"], facts["hidden_size"])
    return OnnxEncoder("onnx fp32", str(folder / "model.onnx"), str(source / "tokenizer.json"), "bench",
                       max_tokens=facts["max_seq_length"], batch_size=batch_size)


def speed(encoders: dict, groups: dict[str, list[str]], repeats: int) -> dict:
    """{group: {encoder: [seconds per repeat]}}, encoders interleaved in a rotating order."""
    names = list(encoders)
    seconds: dict[str, dict[str, list[float]]] = {group: {name: [] for name in names} for group in groups}
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[:repeat % len(names)]
        for group, texts in groups.items():
            for name in order:
                started = time.perf_counter()
                encoders[name].encode(texts)
                seconds[group][name].append(time.perf_counter() - started)
        log(f"repeat {repeat + 1}/{repeats}: " + ", ".join(
            f"{group} {name} {len(groups[group]) / seconds[group][name][-1]:.0f}/s" for group in groups for name in names))
    return seconds


def agreement(encoders: dict, texts: list[str]) -> dict[str, dict[str, float]]:
    reference = encoders[BASELINE].encode(texts)
    result = {}
    for name, encoder in encoders.items():
        if name == BASELINE:
            continue
        cosines = (encoder.encode(texts) * reference).sum(axis=1)
        result[name] = {"median": float(np.median(cosines)), "p1": float(np.percentile(cosines, 1)), "min": float(cosines.min())}
    return result


def judged_chunks(judged_set: JudgedSet) -> tuple[list[str], list[str]]:
    """(record key of each chunk, chunk text) for the set's records, fields and streams in scope."""
    scope = judged_set.scope
    keys, texts = [], []
    for path in judged_document_paths([judged_set.name]):
        for line in path.open(encoding="utf-8"):
            record = json.loads(line)
            if record.get("deleted") or record["connector_instance_id"] not in scope["connector_instance_id"]:
                continue
            if scope["stream"] and record["stream"] not in scope["stream"]:
                continue
            for field, value in record["fields"].items():
                if scope["field"] and field not in scope["field"] or not isinstance(value, str):
                    continue
                for chunk in split_into_chunks(normalize_text(value), ChunkingParameters()):
                    keys.append(record["record_key"])
                    texts.append(chunk)
    return keys, texts


def judged_ndcg(encoder, judged_set: JudgedSet, keys: list[str], texts: list[str]) -> float:
    matrix = encoder.encode(texts)
    queries = encoder.encode([query.text for query in judged_set.queries])
    record_keys = sorted(set(keys))
    column = {key: i for i, key in enumerate(record_keys)}
    owner = np.array([column[key] for key in keys])
    scores = []
    for query, vector in zip(judged_set.queries, queries):
        best = np.full(len(record_keys), -np.inf)
        np.maximum.at(best, owner, matrix @ vector)  # a record scores its best chunk
        ranked = [record_keys[i] for i in np.argsort(-best, kind="stable")[:10]]
        scores.append(ndcg_at_k(ranked, query.relevant, 10))
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-fp32-onnx", action="store_true", help="skip the fp32 ONNX export")
    parser.add_argument("--int8-batch-one", action="store_true", help="also int8 one text per run")
    parser.add_argument("--no-ndcg", action="store_true", help="skip nDCG@10 on the judged sets")
    args = parser.parse_args()

    groups = {"chat": chat_messages(args.messages), "bbc": bbc_chunks(args.chunks)}
    log(f"{len(groups['chat'])} chat messages, {len(groups['bbc'])} BBC chunks, batch size {args.batch_size}")
    encoders = {
        BASELINE: load_encoder(MINILM_SPEC, batch_size=args.batch_size),
        "onnx int8": load_encoder(MINILM_INT8_SPEC, batch_size=args.batch_size),
    }
    if args.int8_batch_one:
        encoders["onnx int8, batch 1"] = load_encoder(MINILM_INT8_SPEC, batch_size=1)
    scratch = tempfile.TemporaryDirectory(prefix="encoder-speed-")
    if not args.no_fp32_onnx:
        encoders["onnx fp32"] = fp32_onnx(args.batch_size, Path(scratch.name))
    for encoder in encoders.values():
        encoder.encode(groups["chat"][:args.batch_size])  # warm: first-run allocations, thread pools

    seconds = speed(encoders, groups, args.repeats)
    report: dict = {"batch_size": args.batch_size, "repeats": args.repeats, "texts": {g: len(t) for g, t in groups.items()},
                    "speed": {}, "cosine_to_fp32": {}, "ndcg_at_10": {}}
    for group, texts in groups.items():
        line = {}
        for name in encoders:
            ratios = [base / mine for base, mine in zip(seconds[group][BASELINE], seconds[group][name])]
            line[name] = {"texts_per_second": round(len(texts) / statistics.median(seconds[group][name]), 1),
                          "ratio_to_fp32": round(statistics.median(ratios), 2)}
        report["speed"][group] = line
        report["cosine_to_fp32"][group] = {name: {k: round(v, 4) for k, v in facts.items()}
                                           for name, facts in agreement(encoders, texts).items()}
    if not args.no_ndcg:
        for judged_set in load_judged_sets():
            keys, texts = judged_chunks(judged_set)
            log(f"{judged_set.name}: {len(judged_set.queries)} queries, {len(texts)} chunks of {len(set(keys))} records")
            # Not the fp32 export: its vectors are sentence-transformers' to float rounding (cosine 1.0000).
            report["ndcg_at_10"][judged_set.name] = {name: round(judged_ndcg(encoder, judged_set, keys, texts), 4)
                                                     for name, encoder in encoders.items() if name != "onnx fp32"}
    scratch.cleanup()

    print(json.dumps(report, indent=2))
    for group in groups:
        for name, facts in report["speed"][group].items():
            agree = report["cosine_to_fp32"][group].get(name)
            cosine = f", cosine to fp32 median {agree['median']:.4f} p1 {agree['p1']:.4f} min {agree['min']:.4f}" if agree else ""
            print(f"{group:5} {name:28} {facts['texts_per_second']:8.1f} texts/s  {facts['ratio_to_fp32']:5.2f}x{cosine}")
    for set_name, by_encoder in report["ndcg_at_10"].items():
        baseline = by_encoder[BASELINE]
        print(f"nDCG@10 {set_name}: " + ", ".join(f"{name} {value:.4f} ({value - baseline:+.4f})" for name, value in by_encoder.items()))


if __name__ == "__main__":
    main()
