"""``shipyard drift``, run as a real subprocess: exit codes 0/1/2, the JSON and HTML reports, and the
current window read from stored traces."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from shipyard.cli import app
from shipyard.store import Store
from tests.store.test_store import record

WORDS = "the card was declined refund please password reset my account login charge".split()


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k != "SHIPYARD_CONFIG"}
    return subprocess.run([sys.executable, "-m", "shipyard", "drift", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env, check=False)


def rows(n: int, seed: int, *, age: float = 40.0, words: list[str] = WORDS) -> list[dict]:
    r = random.Random(seed)
    return [{"text": " ".join(r.choices(words, k=7)), "user": {"age": round(r.gauss(age, 8), 2)},
             "lang": r.choice(["en", "fr"])} for _ in range(n)]


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


@pytest.fixture
def files(tmp_path):
    return {
        "ref": write_jsonl(tmp_path / "ref.jsonl", rows(300, 11)),
        "same": write_jsonl(tmp_path / "same.jsonl", rows(250, 12)),
        "moved": write_jsonl(tmp_path / "moved.jsonl", rows(250, 13, age=52)),
    }


def test_exit_0_when_nothing_drifted_and_1_with_the_json_when_something_did(tmp_path, files):
    same = run("triage", "--reference", str(files["ref"]), "--current", str(files["same"]), "--no-embeddings")
    assert same.returncode == 0, same.stderr
    assert "0 of 3 fields drifted" in same.stdout and "user.age" in same.stdout
    out, page = tmp_path / "report.json", tmp_path / "report.html"
    moved = run("triage", "-r", str(files["ref"]), "--current", str(files["moved"]), "--no-embeddings",
                "--json", str(out), "--html", str(page))
    assert moved.returncode == 1, moved.stderr
    assert "1 of 3 fields drifted (33%): user.age" in moved.stdout
    data = json.loads(out.read_text())
    assert data["feature"] == "triage" and data["drifted_fields"] == ["user.age"] and data["drifted"] is False
    assert (data["reference_rows"], data["current_rows"]) == (300, 250)
    by_field = {f["field"]: f for f in data["fields"]}
    assert set(by_field) == {"text", "user.age", "lang"}
    age = by_field["user.age"]
    assert (age["type"], age["test"], age["threshold"], age["threshold_on"]) == ("numeric", "ks", 0.05, "p_value")
    assert age["drifted"] is True and age["p_value"] < 1e-6 and (age["reference_n"], age["current_n"]) == (300, 250)
    assert {c["test"] for c in by_field["text"]["checks"]} >= {"ks", "jensen_shannon", "oov_rate", "psi"}
    html = page.read_text()
    assert html.startswith("<!doctype html>") and html.count("<svg") == 3 and "<script" not in html


def in_process(*args: str) -> Result:
    """The command run in this process (typer's runner): for the cases that need no real exit."""
    return CliRunner().invoke(app, ["drift", *args])


def test_fields_and_segments_narrow_the_comparison(files):
    result = in_process("triage", "-r", str(files["ref"]), "--current", str(files["moved"]), "--no-embeddings",
                        "--fields", "lang,text", "--segment", "lang=en")
    assert result.exit_code == 0, result.output
    assert "0 of 2 fields drifted" in result.stdout and "user.age" not in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--current", "{moved}", "--reference", "{tmp}/nope.jsonl"], "nope.jsonl: cannot read the file"),
    (["--current", "{bad}", "--reference", "{ref}"], "bad.jsonl:2: bad JSON: Expecting value at column 1"),
    (["--current", "{moved}", "--reference", "{ref}", "--fields", "nope"], "unknown field(s) nope"),
    (["--current", "{moved}", "--reference", "{ref}", "--segment", "lang"], "--segment: write FIELD=VALUE"),
    (["--current", "{moved}", "--reference", "{ref}", "--segment", "lang=xx"], "no rows of the reference in segment"),
    (["--current", "{moved}", "--reference", "{ref}", "--type", "lang=ordinal"], "must be one of numeric"),
    (["--current", "{moved}", "--reference", "{ref}", "--window", "soon"], "--window: 'soon' is not a duration"),
])
def test_usage_and_data_errors_exit_2_with_one_line(tmp_path, files, args, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\nnot json\n')
    values = {"tmp": str(tmp_path), "ref": str(files["ref"]), "moved": str(files["moved"]), "bad": str(bad)}
    result = in_process("triage", *[a.format(**values) for a in args], "--no-embeddings")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == "" and isinstance(result.exception, SystemExit)


def config_file(tmp_path: Path, triage: str = "") -> Path:
    """Three features on a SQLite store in tmp_path; ``triage``: more lines for the triage feature."""
    path = tmp_path / "shipyard.yaml"
    path.write_text(f"""
storage: sqlite:///{tmp_path}/store.db
providers:
  p: {{kind: openai, base_url: "http://127.0.0.1:9", api_key: none}}
features:
  triage:
    owners: {{incidents: a, changes: b, evaluation: c, risk: d}}
    route: [{{provider: p, model: m}}]
{triage}  chat:
    owners: {{incidents: a, changes: b, evaluation: c, risk: d}}
    route: [{{provider: p, model: m}}]
  extract:
    owners: {{incidents: a, changes: b, evaluation: c, risk: d}}
    route: [{{provider: p, model: m}}]
    eval: {{dataset: cases.jsonl, checks: [{{name: right, type: exact}}]}}
""")
    return path


def traced(i: int, feature: str, content, *, age_s: float = 60.0) -> dict:
    rec = record(i, feature)
    rec.update(started_at=time.time() - age_s, content=content, content_mode="redacted")
    return rec


def test_without_current_the_recorded_traffic_of_the_window_is_compared(tmp_path, files):
    config = config_file(tmp_path)
    store = Store(f"sqlite:///{tmp_path}/store.db")
    store.migrate()
    moved = rows(200, 7, age=52)
    store.insert_traces(
        [traced(i, "triage", {"input": row, "output": {"category": "billing"}}) for i, row in enumerate(moved)]
        + [traced(1000 + i, "triage", {"input": row}, age_s=3 * 86400) for i, row in enumerate(rows(200, 8))]
        + [traced(2000, "triage", None)]
    )
    store.close()
    result = run("triage", "-c", str(config), "-r", str(files["ref"]), "--window", "1d", "--no-embeddings")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 of 3 fields drifted (33%): user.age" in result.stdout
    assert "300 reference rows, 200 current rows" in result.stdout  # the 3-day-old calls are outside the window
    out = tmp_path / "week.json"
    week = run("triage", "-c", str(config), "-r", str(files["ref"]), "--window", "7d", "--no-embeddings",
               "--json", str(out))
    assert week.returncode == 1 and json.loads(out.read_text())["current_rows"] == 400
    current = json.loads(out.read_text())["current"]
    assert current.startswith("traffic of the last 7d (20") and current.endswith("..now UTC, 400 calls)")


def test_chat_traffic_is_compared_as_prompt_and_answer(tmp_path):
    config = config_file(tmp_path)
    store = Store(f"sqlite:///{tmp_path}/store.db")
    store.migrate()
    r = random.Random(4)
    store.insert_traces([
        traced(i, "chat", {"messages": [{"role": "system", "content": "be brief"},
                                        {"role": "user", "content": " ".join(r.choices(WORDS, k=6))}],
                           "answer": " ".join(r.choices(WORDS, k=5))})
        for i in range(120)
    ])
    store.close()
    reference = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": " ".join(r.choices(WORDS, k=6))}],
         "answer": " ".join(r.choices(WORDS, k=5))}
        for _ in range(150)
    ])
    out = tmp_path / "chat.json"
    result = run("chat", "-c", str(config), "-r", str(reference), "--no-embeddings", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    assert [(f["field"], f["type"]) for f in data["fields"]] == [("prompt", "text"), ("answer", "text")]
    assert data["current_rows"] == 120


def test_no_stored_traffic_and_an_unknown_feature_are_data_errors(tmp_path, files):
    config = config_file(tmp_path)
    empty = in_process("triage", "-c", str(config), "-r", str(files["ref"]), "--no-embeddings")
    assert empty.exit_code == 2 and "no recorded calls of 'triage' in the last 24h" in empty.stderr
    unknown = in_process("nope", "-c", str(config), "-r", str(files["ref"]), "--no-embeddings")
    assert unknown.exit_code == 2 and "unknown feature 'nope'; the config has: chat, extract, triage" in unknown.stderr
    no_reference = in_process("triage", "-c", str(config), "--current", str(files["moved"]))
    assert no_reference.exit_code == 2 and "pass --reference FILE or traffic:START..END, or set drift.reference or eval.dataset" in no_reference.stderr


def test_the_eval_dataset_is_the_default_reference(tmp_path, files):
    config = config_file(tmp_path)
    write_jsonl(tmp_path / "cases.jsonl", [{"id": f"c{i}", "input": row, "expected": {"category": "billing"}}
                                           for i, row in enumerate(rows(300, 11))])
    out = tmp_path / "eval.json"
    result = in_process("extract", "-c", str(config), "--current", str(files["moved"]), "--no-embeddings",
                        "--json", str(out))
    assert result.exit_code == 1, result.output
    data = json.loads(out.read_text())
    assert data["reference"] == str(tmp_path / "cases.jsonl") and data["drifted_fields"] == ["user.age"]
