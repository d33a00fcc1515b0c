#!/usr/bin/env python3
"""How well does the injection screen separate attacks from hard negatives, and how fast is it?

    /work/venv/bin/python bench/injection.py [--threshold T] [--show-misses] [--json FILE]

Reads the labeled set shipped with Shipyard (``shipyard/guard/data/injection_eval.jsonl``: direct,
indirect, persona, tool-hijack and obfuscated injections, and hard negatives such as questions about
injection, users correcting their own earlier message, code with role words, translation requests),
runs ``screen`` on every text and prints:

1. precision, recall and F1 at the threshold (default ``DEFAULT_THRESHOLD``) on the test split and on all;
2. the flag rate per kind (the share of each kind's texts flagged; for negative kinds, lower is better);
3. the same figures for thresholds 0.2 to 0.9 on the test split;
4. throughput in MB/s over the whole set and over a 1 MB benign document;
5. every false positive (and with ``--show-misses``, every false negative) with its reasons.

Exit code 1 if precision < 0.9 or recall < 0.8 on the test split. Only reads files; no model, no network.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from typing import Any

from shipyard.guard.injection import DEFAULT_THRESHOLD, labeled_examples, screen

MIN_PRECISION = 0.9
MIN_RECALL = 0.8


def figures(rows: list[dict[str, Any]], scores: list[float], threshold: float) -> dict[str, float]:
    tp = sum(1 for r, s in zip(rows, scores, strict=True) if r["injection"] and s >= threshold)
    fp = sum(1 for r, s in zip(rows, scores, strict=True) if not r["injection"] and s >= threshold)
    fn = sum(1 for r, s in zip(rows, scores, strict=True) if r["injection"] and s < threshold)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": len(rows), "tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def line(name: str, f: dict[str, float]) -> str:
    return (
        f"{name:<8} n={f['n']:<4} precision={f['precision']:.3f} recall={f['recall']:.3f} f1={f['f1']:.3f}"
        f"  (tp={f['tp']} fp={f['fp']} fn={f['fn']})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--show-misses", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    rows = labeled_examples()
    started = time.perf_counter()
    verdicts = [screen(r["text"]) for r in rows]
    elapsed = time.perf_counter() - started
    scores = [v.score for v in verdicts]
    test = [i for i, r in enumerate(rows) if r["split"] == "test"]

    def subset(idx: list[int]) -> tuple[list[dict[str, Any]], list[float]]:
        return [rows[i] for i in idx], [scores[i] for i in idx]

    print(
        f"labeled set: {len(rows)} texts, {sum(r['injection'] for r in rows)} injections; "
        f"test split {len(test)}; threshold {args.threshold}"
    )
    results = {"test": figures(*subset(test), args.threshold), "all": figures(rows, scores, args.threshold)}
    print(line("test", results["test"]))
    print(line("all", results["all"]))

    print("\nflag rate per kind (all splits; positives want 1.0, negatives 0.0):")
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_kind[r["kind"]].append(i)
    for kind, idx in sorted(by_kind.items(), key=lambda kv: (not rows[kv[1][0]]["injection"], kv[0])):
        flagged = sum(1 for i in idx if scores[i] >= args.threshold)
        label = "inj" if rows[idx[0]]["injection"] else "neg"
        print(f"  {label} {kind:<22} {flagged:>3}/{len(idx):<3} {flagged / len(idx):.2f}")

    print("\nthresholds (test split):")
    table = {}
    for t in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        table[t] = figures(*subset(test), t)
        print("  " + line(f"t={t:.1f}", table[t]))

    size = sum(len(r["text"].encode()) for r in rows)
    big = ("The quarterly report covers revenue, costs and hiring across regions. " * 15000)[:1_000_000]
    started = time.perf_counter()
    screen(big)
    big_elapsed = time.perf_counter() - started
    print(
        f"\nthroughput: labeled set {size / elapsed / 1e6:.2f} MB/s ({elapsed / len(rows) * 1e3:.3f} ms/text); "
        f"1 MB document {len(big) / big_elapsed / 1e6:.2f} MB/s"
    )

    print("\nfalse positives:")
    for i, r in enumerate(rows):
        if not r["injection"] and scores[i] >= args.threshold:
            print(f"  [{r['split']}/{r['kind']}] {scores[i]:.2f} {verdicts[i].reasons} {r['text'][:120]!r}")
    if args.show_misses:
        print("\nfalse negatives:")
        for i, r in enumerate(rows):
            if r["injection"] and scores[i] < args.threshold:
                print(
                    f"  [{r['split']}/{r['kind']}] {scores[i]:.2f} {verdicts[i].reasons} {r['text'][:120]!r}"
                )

    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(
                {"results": results, "thresholds": {str(k): v for k, v in table.items()}}, out, indent=2
            )

    gate = results["test"]
    ok = gate["precision"] >= MIN_PRECISION and gate["recall"] >= MIN_RECALL
    print(
        f"\ngate (test split): precision >= {MIN_PRECISION}, recall >= {MIN_RECALL}: {'pass' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
