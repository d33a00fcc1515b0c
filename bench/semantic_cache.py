#!/usr/bin/env python3
"""Does the semantic cache answer a question with the answer to a different one? False hits, hits, speed.

    /work/venv/bin/python bench/semantic_cache.py [--threshold T] [--threads N] [--queries N] [--cross]
                                                  [--show N] [--json FILE]

Reads the labeled pairs shipped with Shipyard (``shipyard/economics/data/paraphrase_pairs.jsonl``: true
paraphrases, and non-paraphrases that differ by a negation, swapped entities, a changed number, another
entity, another intent or a related question), embeds both sides with the local all-MiniLM-L6-v2 model
(no network) and prints:

1. the model: load time (imports included), encode latency of one query at a time (p50/p99, in the
   caller's thread and through ``aencode``'s worker thread), and the throughput of a batch of 64;
2. at the threshold (default: ``DEFAULT_THRESHOLD``; a rewording needs ``REWORDING_MARGIN`` more, see
   ``is_hit``): the false-hit rate (non-paraphrase pairs that would be served / non-paraphrase pairs) and the
   paraphrase hit rate, per split, per kind, with the lexical guard and with embeddings alone; and what
   the guard made of every pair. tune and dev chose the guard and the thresholds; test was written last
   (``labeled_pairs`` says what each split has been used for);
3. the same two rates for thresholds 0.60 to 0.97;
4. with ``--cross``: every pair of *different* questions in the set (not labeled: two questions of
   different pairs can still be paraphrases) that the cache would serve, the closest ``--show`` of them
   listed, to read by eye.

Exit code 1 if the false-hit rate at the threshold is 1% or more, overall or on the test split.
Only reads files and runs the model on the CPU; starts no process, opens no socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from shipyard.economics.semantic import (
    DEFAULT_THRESHOLD,
    REWORDING_MARGIN,
    Embedder,
    is_hit,
    labeled_pairs,
    verdict,
)

THRESHOLDS = (0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95, 0.97)
KINDS = (
    "negation",
    "swapped_entities",
    "changed_number",
    "different_entity",
    "different_intent",
    "related_topic",
)
SPLITS = ("tune", "dev", "test")
MAX_FALSE_HIT_RATE = 0.01


def log(msg: str = "") -> None:
    print(msg, flush=True)


def row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%} ({part}/{whole})" if whole else "-"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the model ------------------------------------------------------------------------------------------


def measure_model(embedder: Embedder, questions: list[str], n: int) -> dict[str, Any]:
    started = time.perf_counter()
    embedder.load()
    load_s = time.perf_counter() - started
    sample = (questions * (n // max(len(questions), 1) + 1))[:n]
    for q in sample[:10]:
        embedder.encode([q])  # warm-up
    sync_ms = []
    for q in sample:
        t = time.perf_counter()
        embedder.encode([q])
        sync_ms.append((time.perf_counter() - t) * 1000)

    async def through_worker() -> list[float]:
        out = []
        for q in sample:
            t = time.perf_counter()
            await embedder.aencode([q])
            out.append((time.perf_counter() - t) * 1000)
        return out

    async_ms = asyncio.run(through_worker())
    batch = sample[:64]
    t = time.perf_counter()
    embedder.encode(batch)
    batch_s = time.perf_counter() - t
    import torch

    return {
        "load_s": round(load_s, 2),
        "torch_threads": torch.get_num_threads(),
        "queries": len(sample),
        "encode_p50_ms": round(statistics.median(sync_ms), 2),
        "encode_p99_ms": round(percentile(sync_ms, 0.99), 2),
        "aencode_p50_ms": round(statistics.median(async_ms), 2),
        "aencode_p99_ms": round(percentile(async_ms, 0.99), 2),
        "batch64_per_s": round(len(batch) / batch_s, 1),
    }


# -- the labeled pairs ----------------------------------------------------------------------------------


def rates(pairs: list[dict[str, Any]], threshold: float, guard: bool) -> dict[str, Any]:
    """False hits and paraphrase hits of ``pairs`` (each with its "score" and "reason")."""

    def hit(p: dict[str, Any]) -> bool:
        return is_hit(p["score"], p["a"], p["b"], threshold) if guard else p["score"] >= threshold

    out: dict[str, Any] = {}
    for name, chosen in [("all", pairs)] + [(s, [p for p in pairs if p["split"] == s]) for s in SPLITS]:
        negatives = [p for p in chosen if not p["paraphrase"]]
        paraphrases = [p for p in chosen if p["paraphrase"]]
        out[name] = {
            "false_hits": sum(map(hit, negatives)),
            "negatives": len(negatives),
            "paraphrase_hits": sum(map(hit, paraphrases)),
            "paraphrases": len(paraphrases),
        }
    for kind in KINDS:
        of_kind = [p for p in pairs if p["kind"] == kind]
        out[kind] = {"false_hits": sum(map(hit, of_kind)), "negatives": len(of_kind)}
    return out


def cross_hits(pairs: list[dict[str, Any]], vectors: Any, index: dict[str, int], threshold: float) -> list:
    """Pairs of questions that are not linked by a labeled paraphrase (directly or through other pairs)
    and that the cache would serve (``is_hit``)."""
    import numpy as np

    questions = list(index)
    group = list(range(len(questions)))

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for p in pairs:
        if p["paraphrase"]:
            group[root(index[p["a"]])] = root(index[p["b"]])
    sims = vectors @ vectors.T
    found = []
    for i in range(len(questions)):
        for j in np.nonzero(sims[i, i + 1 :] >= threshold)[0] + i + 1:
            if root(i) != root(j) and is_hit(float(sims[i, j]), questions[i], questions[j], threshold):
                found.append((float(sims[i, j]), questions[i], questions[j]))
    return sorted(found, reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="[DEFAULT_THRESHOLD]")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads [1, as in the gateway]"
    )
    parser.add_argument("--queries", type=int, default=300, help="single queries timed [300]")
    parser.add_argument("--cross", action="store_true", help="also serve every question against every other")
    parser.add_argument("--show", type=int, default=30, help="cross pairs listed [30]")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    threshold = args.threshold

    pairs = labeled_pairs()
    questions = list(dict.fromkeys(q for p in pairs for q in (p["a"], p["b"])))
    embedder = Embedder(threads=args.threads)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    log(f"# Semantic cache: {len(pairs)} labeled pairs, {len(questions)} distinct questions")
    log(f"python {platform.python_version()}, {os.cpu_count()} CPUs, loadavg {' '.join(load)}")

    model = measure_model(embedder, questions, args.queries)
    log("")
    log(f"## The model (all-MiniLM-L6-v2, CPU, {model['torch_threads']} torch thread(s))")
    log("")
    log(row("Figure", "Value"))
    log(row("---", "---"))
    log(row("load, imports included (once per process)", f"{model['load_s']:.2f} s"))
    log(
        row(
            f"encode one query, p50 / p99 ({model['queries']} queries)",
            f"{model['encode_p50_ms']:.1f} / {model['encode_p99_ms']:.1f} ms",
        )
    )
    log(
        row(
            "aencode one query (worker thread), p50 / p99",
            f"{model['aencode_p50_ms']:.1f} / {model['aencode_p99_ms']:.1f} ms",
        )
    )
    log(row("encode a batch of 64", f"{model['batch64_per_s']:.0f} queries/s"))

    vectors = embedder.encode(questions)
    index = {q: i for i, q in enumerate(questions)}
    for p in pairs:
        p["score"] = float(vectors[index[p["a"]]] @ vectors[index[p["b"]]])
        p["verdict"] = verdict(p["a"], p["b"])

    guarded, alone = rates(pairs, threshold, guard=True), rates(pairs, threshold, guard=False)
    log("")
    log(
        f"## At threshold {threshold:.2f} (rewordings {threshold + REWORDING_MARGIN:.2f}): false hits"
        " (non-paraphrases served) and paraphrase hits"
    )
    log("")
    log(
        row(
            "Pairs",
            "False-hit rate, guard",
            "Embeddings alone",
            "Paraphrase hit rate, guard",
            "Embeddings alone",
        )
    )
    log(row(*["---"] * 5))
    for name in ("all",) + SPLITS:
        g, e = guarded[name], alone[name]
        label = {"all": "all", "tune": "tune split", "dev": "dev split", "test": "test split (written last)"}[
            name
        ]
        log(
            row(
                label,
                pct(g["false_hits"], g["negatives"]),
                pct(e["false_hits"], e["negatives"]),
                pct(g["paraphrase_hits"], g["paraphrases"]),
                pct(e["paraphrase_hits"], e["paraphrases"]),
            )
        )
    for kind in KINDS:
        g, e = guarded[kind], alone[kind]
        log(row(kind, pct(g["false_hits"], g["negatives"]), pct(e["false_hits"], e["negatives"]), "", ""))

    reasons_neg = Counter(p["verdict"] for p in pairs if not p["paraphrase"])
    reasons_para = Counter(p["verdict"] for p in pairs if p["paraphrase"])
    log("")
    log("Guard verdicts, all pairs, whatever the cosine (same and reworded pass the guard):")
    log("  non-paraphrases: " + ", ".join(f"{k} {n}" for k, n in reasons_neg.most_common()))
    log("  paraphrases:     " + ", ".join(f"{k} {n}" for k, n in reasons_para.most_common()))
    served = [p for p in pairs if not p["paraphrase"] and is_hit(p["score"], p["a"], p["b"], threshold)]
    for p in served:
        log(
            f"  FALSE HIT [{p['split']}, {p['kind']}, {p['verdict']}] {p['score']:.3f}: {p['a']!r} / {p['b']!r}"
        )

    log("")
    log(f"## Thresholds (with the guard, rewordings +{REWORDING_MARGIN:.2f}; embeddings alone in brackets)")
    log("")
    log(row("Threshold", "False-hit rate, all", "False-hit rate, test", "Paraphrase hit rate, all"))
    log(row(*["---"] * 4))
    table = {}
    for t in sorted(set(THRESHOLDS) | {round(threshold, 4)}):
        g, e = rates(pairs, t, guard=True), rates(pairs, t, guard=False)
        table[f"{t:.2f}"] = {"guard": g, "alone": e}
        mark = " (default)" if abs(t - DEFAULT_THRESHOLD) < 1e-9 else ""
        log(
            row(
                f"{t:.2f}{mark}",
                f"{pct(g['all']['false_hits'], g['all']['negatives'])} [{e['all']['false_hits'] / e['all']['negatives']:.1%}]",
                f"{pct(g['test']['false_hits'], g['test']['negatives'])} [{e['test']['false_hits'] / e['test']['negatives']:.1%}]",
                f"{pct(g['all']['paraphrase_hits'], g['all']['paraphrases'])} "
                f"[{e['all']['paraphrase_hits'] / e['all']['paraphrases']:.1%}]",
            )
        )

    cross: list = []
    if args.cross:
        cross = cross_hits(pairs, vectors, index, threshold)
        total = len(questions) * (len(questions) - 1) // 2
        log("")
        log(f"## Cross pairs: {len(cross)} of {total:,} pairs of different questions would be served")
        log("(not labeled: read them; two questions of different pairs can be paraphrases too)")
        for score, a, b in cross[: args.show]:
            log(f"  {score:.3f}  {a!r} / {b!r}")

    overall = guarded["all"]["false_hits"] / guarded["all"]["negatives"]
    held_out = guarded["test"]["false_hits"] / max(guarded["test"]["negatives"], 1)
    ok = overall < MAX_FALSE_HIT_RATE and held_out < MAX_FALSE_HIT_RATE
    log("")
    log(
        f"Verdict: false-hit rate {overall:.2%} overall, {held_out:.2%} on the test split at {threshold:.2f}"
        f" (must be < {MAX_FALSE_HIT_RATE:.0%}): {'PASS' if ok else 'FAIL'};"
        f" paraphrase hit rate {guarded['all']['paraphrase_hits'] / guarded['all']['paraphrases']:.1%}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "threshold": threshold,
                    "model": model,
                    "at_threshold": {"guard": guarded, "embeddings_alone": alone},
                    "thresholds": table,
                    "guard_reasons": {"non_paraphrases": reasons_neg, "paraphrases": reasons_para},
                    "cross_pairs_served": [{"score": s, "a": a, "b": b} for s, a, b in cross],
                    "pass": ok,
                },
                indent=2,
            )
        )
    embedder.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
