"""Unit tests for shipyard.eval.cases: JSONL and CSV datasets, every error they can hold, writing, traces."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shipyard.errors import ShipyardError
from shipyard.eval import cases as cases_module
from shipyard.eval.cases import Case, DatasetError, cases_from_traces, iter_cases, load_cases, write_cases


def jsonl(tmp_path: Path, *lines: str, name: str = "cases.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def csv_file(tmp_path: Path, text: str, name: str = "cases.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def error_of(path: Path) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        load_cases(path)
    return info.value


def test_the_public_surface():
    assert set(cases_module.__all__) == {
        "SEVERITIES", "Case", "DatasetError", "TraceCases", "cases_from_traces", "iter_cases", "load_cases",
        "write_cases",
    }
    assert issubclass(DatasetError, ShipyardError) and DatasetError.code == "dataset_error"


# -- JSONL ----------------------------------------------------------------------------------------------


def test_jsonl_reads_every_field_and_defaults_the_rest(tmp_path: Path):
    path = jsonl(
        tmp_path,
        json.dumps({"id": "refund-1", "input": {"text": "refund please"}, "expected": {"category": "billing"},
                    "segment": {"lang": "en", "tier": 2, "vip": True, "ratio": 0.5}, "severity": "critical",
                    "meta": {"ticket": "T-12"}}),
        "",
        json.dumps({"input": [{"role": "user", "content": "hola"}]}),
        json.dumps({"id": 7, "input": "plain text", "severity": " Minor "}),
    )
    first, second, third = load_cases(path)
    assert first == Case(id="refund-1", input={"text": "refund please"}, expected={"category": "billing"},
                         segment={"lang": "en", "tier": "2", "vip": "true", "ratio": "0.5"}, severity="critical",
                         meta={"ticket": "T-12"})
    assert second == Case(id="line-3", input=[{"role": "user", "content": "hola"}])
    assert second.expected is None and second.segment == {} and second.severity is None and second.meta == {}
    assert (third.id, third.input, third.severity) == ("7", "plain text", "minor")


def test_a_case_is_frozen():
    case = Case(id="a", input="x")
    with pytest.raises(AttributeError):
        case.id = "b"  # type: ignore[misc]


def test_a_leading_bom_is_ignored(tmp_path: Path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"input": "x"}\n')
    assert load_cases(path)[0].input == "x"


def test_iter_cases_streams_one_case_at_a_time(tmp_path: Path):
    path = jsonl(tmp_path, '{"input": "a"}', '{"input": "b"}', "{broken")
    stream = iter_cases(path)
    assert next(stream).input == "a"
    assert next(stream).input == "b"
    with pytest.raises(DatasetError, match=r"cases\.jsonl:3: bad JSON"):
        next(stream)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"input": "a"}', '{"input": "b",}'],
         (r"cases\.jsonl:2: bad JSON: Expecting property name enclosed in double quotes at column 15; write each "
         r"case as one JSON object on one line")),
        (['["a"]'], r"cases\.jsonl:1: a case must be a JSON object, not a list; write \{\"input\": \.\.\.\}"),
        (['{"id": "x"}'], r"cases\.jsonl:1: no \"input\"; give every case an input"),
        (['{"input": null}'], r"cases\.jsonl:1: \"input\" is null; give every case an input"),
        (['{"input": []}'], r"cases\.jsonl:1: \"input\" is an empty list of messages"),
        (['{"input": [{"content": "hi"}]}'], r"cases\.jsonl:1: input\[0\] is not a chat message; a message is"),
        (['{"id": "a", "input": 1}', '{"input": 2}', '{"id": "a", "input": 3}'],
         r"cases\.jsonl:3: duplicate id 'a' \(first on line 1\); give every case its own id"),
        (['{"input": 1}', '{"id": "line-1", "input": 2}'], r"cases\.jsonl:2: duplicate id 'line-1' \(first on line 1\)"),
        (['{"input": 1, "severity": "high"}'],
         r"cases\.jsonl:1: unknown severity 'high'; use one of critical, major, minor, or leave it out"),
        (['{"input": 1, "severity": 3}'], r"cases\.jsonl:1: unknown severity 3"),
        (['{"input": 1, "expceted": 2}'],
         (r"cases\.jsonl:1: unknown key 'expceted'; a case has id, input, expected, segment, severity, meta; put "
         r"free fields under \"meta\"")),
        (['{"input": 1, "id": ""}'], r"cases\.jsonl:1: \"id\" must be a non-empty string or an integer, not a string"),
        (['{"input": 1, "id": true}'], r"cases\.jsonl:1: \"id\" must be a non-empty string or an integer, not a boolean"),
        (['{"input": 1, "segment": "en"}'], r"cases\.jsonl:1: \"segment\" must be an object, not a string"),
        (['{"input": 1, "segment": {"lang": ["en"]}}'], r"cases\.jsonl:1: segment 'lang' is a list; segment values"),
        (['{"input": 1, "segment": {"": "x"}}'], r"cases\.jsonl:1: a segment key is empty"),
        (['{"input": 1, "meta": []}'], r"cases\.jsonl:1: \"meta\" must be an object, not a list"),
    ],
)
def test_jsonl_errors_name_the_line_the_problem_and_the_fix(tmp_path: Path, lines: list[str], message: str):
    err = error_of(jsonl(tmp_path, *lines))
    assert err.line == len(lines)
    assert re.match(message, str(err)[len(str(tmp_path)) + 1:])


def test_unreadable_encoding_names_the_line_and_byte(tmp_path: Path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"input": "ok"}\n{"input": "caf\xe9"}\n')
    err = error_of(path)
    assert err.line == 2
    assert str(err) == (f"{path}:2: not UTF-8 text (byte 0xe9 at column 15); save the file as UTF-8 (a "
                        "spreadsheet's \"CSV UTF-8\"; iconv -f <encoding> -t utf-8)")


def test_an_empty_file_and_a_file_of_blank_lines(tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert str(error_of(empty)) == (f"{empty}: the file is empty; add one JSON object per line, each with an "
                                    "\"input\"")
    blank = jsonl(tmp_path, "", "   ", name="blank.jsonl")
    assert str(error_of(blank)).startswith(f"{blank}: the file has no cases;")


def test_a_missing_file_and_an_unknown_format(tmp_path: Path):
    assert "cannot read the file: No such file or directory; check the path" in str(error_of(tmp_path / "no.jsonl"))
    other = tmp_path / "cases.xlsx"
    other.write_bytes(b"x")
    assert str(error_of(other)) == f"{other}: unknown dataset format '.xlsx'; name the file .jsonl, .csv or .tsv"
    assert load_cases(jsonl(tmp_path, '{"input": 1}', name="cases.txt"), format="jsonl")[0].input == 1


# -- CSV ------------------------------------------------------------------------------------------------


def test_csv_columns_json_cells_text_cells_and_segments(tmp_path: Path):
    path = csv_file(
        tmp_path,
        "id,input,expected,severity,segment.lang,seg_tier,meta.note\n"
        'a,"{""text"": ""refund""}","{""category"": ""billing""}",critical,en,2,from support\n'
        "b,my card was declined,billing,,es,,\n"
        "\n"
        ',"[{""role"": ""user"", ""content"": ""hi""}]",42,minor,,,\n'
        'c,"two\nlines",,,,,\n',
    )
    a, b, third, c = load_cases(path)
    assert a == Case(id="a", input={"text": "refund"}, expected={"category": "billing"},
                     segment={"lang": "en", "tier": "2"}, severity="critical", meta={"note": "from support"})
    assert b == Case(id="b", input="my card was declined", expected="billing", segment={"lang": "es"})
    assert third.id == "line-5" and third.input == [{"role": "user", "content": "hi"}]
    assert third.expected == "42" and third.segment == {}  # text unless it starts with { [ or "
    assert c.id == "c" and c.input == "two\nlines"


def test_tsv_and_a_json_string_cell(tmp_path: Path):
    path = csv_file(tmp_path, 'input\texpected\n"""quoted, text"""\tx\n', name="cases.tsv")
    assert load_cases(path)[0].input == "quoted, text"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,expected\na,b\n", r"cases\.csv:1: no \"input\" column \(the header has id, expected\); name the column"),
        ("input,notes\na,b\n", (r"cases\.csv:1: unknown column 'notes'; the columns are input, expected, id, severity, "
                               r"segment\.X \(or seg_X\) and meta\.X")),
        ("input,input\na,b\n", r"cases\.csv:1: the column 'input' appears twice"),
        ("input,expected\na,b\nc,d,e\n", r"cases\.csv:3: 3 cells where the header has 2; quote cells"),
        ('input,expected\na,b\n"{""text"": ",x\n', r"cases\.csv:3: bad JSON in the 'input' cell: .* at column \d+; fix"),
        ("input,expected\n,b\n", r"cases\.csv:2: no \"input\"; give every case an input"),
        ("id,input\nx,a\ny,b\nx,c\n", r"cases\.csv:4: duplicate id 'x' \(first on line 2\)"),
        ("input,severity\na,urgent\n", r"cases\.csv:2: unknown severity 'urgent'"),
        ('input\n"a"b\n', r"cases\.csv:2: bad CSV: .*; quote cells"),
        ("input,expected\n", r"cases\.csv: the file has no cases; add a header row"),
    ],
)
def test_csv_errors_name_the_line_the_problem_and_the_fix(tmp_path: Path, text: str, message: str):
    with pytest.raises(DatasetError, match=message):
        load_cases(csv_file(tmp_path, text))


def test_csv_line_numbers_count_lines_not_records(tmp_path: Path):
    path = csv_file(tmp_path, 'id,input\na,"one\ntwo\nthree"\nb,fine\nb,again\n')
    with pytest.raises(DatasetError, match=r"cases\.csv:6: duplicate id 'b' \(first on line 5\)"):
        load_cases(path)


def test_csv_encoding_error_and_empty_file(tmp_path: Path):
    path = tmp_path / "cases.csv"
    path.write_bytes(b"input\nok\n\xff\xfeoops\n")
    assert error_of(path).line == 3
    path.write_bytes(b"")
    assert str(error_of(path)) == f"{path}: the file is empty; add a header row with an \"input\" column, and a row per case"


# -- writing --------------------------------------------------------------------------------------------


def test_write_then_load_round_trips(tmp_path: Path):
    path = tmp_path / "out.jsonl"
    written = [
        Case(id="a", input={"text": "héllo"}, expected={"n": 1.5}, segment={"lang": "fr"}, severity="major",
             meta={"k": [1]}),
        Case(id="b", input=[{"role": "user", "content": "hi"}]),
        Case(id="c", input="lone \ud800 surrogate"),
    ]
    assert write_cases(path, written, append=False) == 3
    assert load_cases(path) == written
    assert "héllo" in path.read_text(encoding="utf-8")  # readable, not \u-escaped


def test_append_skips_ids_already_in_the_file_and_mends_a_missing_newline(tmp_path: Path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a", "input": 1}', encoding="utf-8")  # no trailing newline
    assert write_cases(path, [Case(id="a", input=9), Case(id="b", input=2), Case(id="b", input=3)]) == 1
    assert [(c.id, c.input) for c in load_cases(path)] == [("a", 1), ("b", 2)]
    assert write_cases(path, [Case(id="b", input=2)]) == 0
    assert write_cases(path, [Case(id="z", input=0)], append=False) == 1
    assert [c.id for c in load_cases(path)] == ["z"]
    with pytest.raises(DatasetError, match=r"missing[/\\]out\.jsonl: cannot write the file: No such file or directory"):
        write_cases(tmp_path / "missing" / "out.jsonl", [Case(id="a", input=1)])


def test_write_refuses_what_load_would_refuse(tmp_path: Path):
    path = tmp_path / "out.jsonl"
    with pytest.raises(DatasetError, match=r"out\.jsonl: case 'x': unknown severity 'high'"):
        write_cases(path, [Case(id="x", input=1, severity="high")])
    with pytest.raises(DatasetError, match=r"case 'y' is not JSON"):
        write_cases(path, [Case(id="y", input={"when": object()})])
    assert not path.exists()
    path.write_text("{broken\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"out\.jsonl:1: bad JSON"):
        write_cases(path, [Case(id="z", input=1)])
    assert path.read_text(encoding="utf-8") == "{broken\n"


# -- traces ---------------------------------------------------------------------------------------------


TRACES = [
    {"trace_id": "t1", "feature": "extract-intent", "op": "invoke", "status": "ok", "tenant": "acme",
     "started_at": 1700000000.0, "content": {"input": {"text": "refund [EMAIL]"}, "output": {"category": "billing"}}},
    {"trace_id": "t2", "feature": "support-triage", "op": "chat", "status": "ok", "tenant": None,
     "started_at": 1700000001.0,
     "content": {"messages": [{"role": "user", "content": "reset my password"}], "answer": "Go to settings."}},
    {"trace_id": "t3", "feature": "extract-intent", "op": "invoke", "status": "error", "content": {"input": {"text": "?"}}},
    {"trace_id": "t4", "feature": "support-triage", "op": "chat", "status": "ok", "content": None},
    {"trace_id": "t5", "feature": "support-triage", "op": "chat", "status": "ok"},
    {"trace_id": "t6", "feature": "support-triage", "op": "chat", "status": "ok", "content": "aesgcm:0a1b2c3d:AAAA"},
    {"trace_id": "t7", "feature": "support-triage", "op": "chat", "status": "ok", "content": {"answer": "x"}},
    {"trace_id": "t1", "feature": "extract-intent", "op": "invoke", "status": "ok", "content": {"input": {"text": "x"}}},
    {"trace_id": "t8", "feature": "support-triage", "op": "chat", "status": "ok",
     "content": '{"messages": [{"role": "user", "content": "as JSON text"}]}'},
]


def test_cases_from_traces_without_expected_by_default():
    made = cases_from_traces(TRACES)
    assert [c.id for c in made] == ["trace-t1", "trace-t2", "trace-t3", "trace-t8"]
    assert made[0] == Case(
        id="trace-t1", input={"text": "refund [EMAIL]"}, expected=None, segment={"source": "traffic"},
        meta={"trace_id": "t1", "feature": "extract-intent", "op": "invoke", "status": "ok", "tenant": "acme",
              "started_at": 1700000000.0},
    )
    assert made[1].input == [{"role": "user", "content": "reset my password"}]
    assert all(c.expected is None for c in made)
    assert made.skipped == {"no_content": 2, "sealed": 1, "no_input": 1, "duplicate": 1}
    assert made.skipped_total == 5


def test_cases_from_traces_with_expected_and_written_as_a_dataset(tmp_path: Path):
    made = cases_from_traces(TRACES, with_expected=True)
    assert [c.expected for c in made] == [{"category": "billing"}, "Go to settings.", None, None]
    path = tmp_path / "traffic.jsonl"
    assert write_cases(path, made) == 4
    assert write_cases(path, cases_from_traces(TRACES)) == 0  # the same traces, added twice, are added once
    assert load_cases(path) == list(made)
