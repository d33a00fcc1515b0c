"""``shipyard drift`` on outputs and per segment: an approved window of recorded traffic as the reference,
a typed feature's answer categories, refusal and fallback rates and online-eval scores compared with it,
and a report per segment that finds the segment that moved when the whole barely did."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from shipyard.store import Store
from tests.cli.test_drift_cli import config_file, in_process, run, write_jsonl
from tests.store.test_store import record

DAY = 86400.0


def calls(first: int, n: int, *, age_s: float, moved: bool, seed: int) -> tuple[list[dict], list[dict]]:
    """n typed calls (traces, online-eval rows). ``moved``: in the Spanish segment, amounts are higher, the
    answers mostly "account", a quarter refused, and the online scores lower; English stays as it was."""
    r = random.Random(seed)
    now = time.time()
    traces, scores = [], []
    for k in range(n):
        i = first + k
        lang = "es" if k % 2 else "en"
        shifted = moved and lang == "es"
        rec = record(i, "triage")
        rec.update(
            started_at=now - age_s - k, op="invoke", segment=f"lang={lang}", content_mode="redacted",
            status="fallback" if r.random() < 0.03 else "ok",
            events=[{"kind": "refusal", "how": "phrase"}] if r.random() < (0.25 if shifted else 0.02) else [],
            content={"input": {"text": " ".join(r.choices("my card was declined refund login".split(), k=5)),
                               "amount": round(r.gauss(60 if shifted else 40, 8), 2), "lang": lang},
                     "output": {"category": "account" if r.random() < (0.9 if shifted else 0.5) else "billing"}},
        )
        traces.append(rec)
        if k % 3 == 0:
            score = min(1.0, max(0.0, r.gauss(0.55 if shifted else 0.9, 0.08)))
            scores.append({"trace_id": rec["trace_id"], "feature": "triage", "at": rec["started_at"],
                           "segment": {"lang": lang}, "passed": score > 0.7, "score": score, "checks": {}})
    return traces, scores


def stored(tmp_path: Path) -> Path:
    config = config_file(tmp_path, "    segments: [lang]\n")
    store = Store(f"sqlite:///{tmp_path}/store.db")
    store.migrate()
    ref_traces, ref_scores = calls(0, 600, age_s=4 * DAY, moved=False, seed=1)
    cur_traces, cur_scores = calls(10_000, 600, age_s=600, moved=True, seed=2)
    store.insert_traces(ref_traces + cur_traces)
    store.evals.add_online(ref_scores + cur_scores)
    store.close()
    return config


def test_outputs_and_outcomes_drift_against_an_approved_traffic_window_per_segment(tmp_path):
    config = stored(tmp_path)
    out, page = tmp_path / "drift.json", tmp_path / "drift.html"
    result = run("triage", "-c", str(config), "--reference", "traffic:5d..3d", "--window", "1d",
                 "--no-embeddings", "--json", str(out), "--html", str(page))
    assert result.returncode == 1, result.stdout + result.stderr
    data = json.loads(out.read_text())
    assert data["reference"].startswith("traffic of the reference window 5d..3d (20")
    assert data["reference"].endswith(" UTC, 600 calls)") and data["current_rows"] == 600
    fields = {f["field"]: f for f in data["fields"]}
    assert {"text", "amount", "lang", "output.category", "outcome.refused", "outcome.fallback",
            "outcome.eval_score"} <= set(fields)
    for name in ("output.category", "outcome.refused", "outcome.eval_score", "amount"):
        assert fields[name]["drifted"] is True, fields[name]
    assert fields["outcome.fallback"]["drifted"] is False  # 3% on both sides
    assert fields["lang"]["drifted"] is False
    assert fields["outcome.refused"]["type"] == "categorical" and fields["outcome.eval_score"]["type"] == "numeric"
    score = fields["outcome.eval_score"]  # only the sampled calls have a score: the rest are missing, alike
    assert score["test"] == "ks" and (score["reference_n"], score["current_n"]) == (200, 200)

    segments = {tuple(s["segment"].items())[0]: s for s in data["segments"]}
    assert set(segments) == {("lang", "es"), ("lang", "en")}
    es, en = segments[("lang", "es")], segments[("lang", "en")]
    assert es["drifted"] is True and en["drifted"] is False, (es["drifted_fields"], en["drifted_fields"])
    assert {"amount", "output.category", "outcome.refused", "outcome.eval_score"} <= set(es["drifted_fields"])
    assert (es["reference_rows"], es["current_rows"]) == (300, 300)
    assert "lang" not in {f["field"] for f in es["fields"]}  # constant within its own segment
    assert data["drifted_segments"] == ["lang=es"]
    assert "segments drifted: 1 of 2 (lang=es)" in " ".join(result.stdout.split())
    assert "By segment" in page.read_text()


def test_a_file_of_inputs_compares_the_inputs_and_leaves_the_outcomes_out(tmp_path):
    config = stored(tmp_path)
    r = random.Random(5)
    reference = write_jsonl(tmp_path / "inputs.jsonl", [
        {"text": " ".join(r.choices("my card was declined refund login".split(), k=5)),
         "amount": round(r.gauss(40, 8), 2), "lang": "es" if i % 2 else "en"} for i in range(400)])
    out = tmp_path / "inputs.json"
    result = in_process("triage", "-c", str(config), "-r", str(reference), "--window", "1d", "--no-embeddings",
                        "--by-segment", "none", "--json", str(out))
    assert result.exit_code == 1, result.output
    data = json.loads(out.read_text())
    assert [f["field"] for f in data["fields"]] == ["text", "amount", "lang"]
    assert data["drifted_fields"] == ["amount"] and data["segments"] == []
    # per segment (the feature's segments), the outcomes are left out the same way
    result = in_process("triage", "-c", str(config), "-r", str(reference), "--window", "1d", "--no-embeddings",
                        "--json", str(out))
    segments = {s["segment"]["lang"]: s for s in json.loads(out.read_text())["segments"]}
    assert [f["field"] for f in segments["en"]["fields"]] == ["text", "amount"]
    assert (segments["en"]["drifted"], segments["es"]["drifted"]) == (False, True)  # only Spanish amounts moved


def test_two_files_need_no_config_and_a_broken_one_nearby_is_a_note(tmp_path, monkeypatch):
    r = random.Random(3)
    rows = [{"amount": round(r.gauss(40, 8), 2), "lang": "es" if i % 2 else "en"} for i in range(200)]
    ref, cur = write_jsonl(tmp_path / "a.jsonl", rows[:100]), write_jsonl(tmp_path / "b.jsonl", rows[100:])
    (tmp_path / "shipyard.yaml").write_text("features: [not, a, mapping]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SHIPYARD_CONFIG", raising=False)
    result = in_process("triage", "-r", str(ref), "--current", str(cur), "--no-embeddings")
    assert result.exit_code == 0, result.output
    assert "shipyard.yaml is not used" in result.stderr
    by = in_process("triage", "-r", str(ref), "--current", str(cur), "--no-embeddings", "--by-segment", "lang")
    assert by.exit_code == 0 and "By segment" in by.stdout and "is not used" not in by.stderr
    numeric = in_process("triage", "-r", str(ref), "--current", str(cur), "--no-embeddings", "--by-segment", "amount")
    assert numeric.exit_code == 0
    assert "distinct values, not compared: a segment field is a category" in " ".join(numeric.stdout.split())


def test_window_errors_exit_2_and_say_how_to_write_one(tmp_path):
    config = stored(tmp_path)
    bad = in_process("triage", "-c", str(config), "-r", "traffic:last week..", "--no-embeddings")
    assert bad.exit_code == 2 and "is neither a date, a time nor a duration" in bad.stderr
    backwards = in_process("triage", "-c", str(config), "-r", "traffic:2026-11-08..2026-11-01", "--no-embeddings")
    assert backwards.exit_code == 2 and "ends before it starts" in backwards.stderr
    empty = in_process("triage", "-c", str(config), "-r", "traffic:2001-01-01..2001-01-08", "--no-embeddings")
    assert empty.exit_code == 2
    assert "no recorded calls of 'triage' in the reference window 2001-01-01..2001-01-08" in empty.stderr
    assert "retention.traces_days" in empty.stderr
    huge = in_process("triage", "-c", str(config), "-r", "traffic:5d..3d", "--window", "99999999d")
    assert huge.exit_code == 2 and "longer than 100 years" in huge.stderr
    ancient = in_process("triage", "-c", str(config), "-r", "traffic:0001-01-01T00:00+01:00..", "--no-embeddings")
    assert ancient.exit_code == 2 and "starts before 1970" in ancient.stderr


def test_a_window_reads_utc_dates_times_offsets_and_durations_ago():
    from shipyard.units import parse_window

    now = 1_800_000_000.0
    assert parse_window("2026-11-01..2026-11-08", now) == (1793491200.0, 1794096000.0)
    assert parse_window("2026-11-01T08:00+01:00..2026-11-01T09:00Z", now) == (1793491200.0 + 7 * 3600, 1793491200.0 + 9 * 3600)
    assert parse_window("14d..7d", now) == (now - 14 * DAY, now - 7 * DAY)
    assert parse_window("90m..", now) == (now - 5400, now)
