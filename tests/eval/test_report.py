import io
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

from rich.console import Console

from shipyard.eval import report
from shipyard.eval.compare import compare
from shipyard.eval.gate import GateSpec, evaluate
from shipyard.eval.scoring import summarize

EVIL = '<script>alert("pwned")</script>'
CHECKS = [
    {"name": "right-category", "type": "json_field_equals", "severity": "major", "weight": 3.0},
    {"name": "no-pii", "type": "no_pii", "severity": "critical", "weight": 5.0},
]


def attempt(*, fail: tuple[str, ...] = (), text: str = '{"category": "billing"}', error: str | None = None,
            detail: str = "") -> dict[str, Any]:
    checks = {c["name"]: {"passed": c["name"] not in fail, "score": 0.0 if c["name"] in fail else 1.0,
                          "detail": detail if c["name"] in fail else "ok"} for c in CHECKS}
    return {"output": None, "text": text, "latency_ms": 800.0, "cost_usd": 0.001, "error": error,
            "trace_id": "trace-1", "checks": checks}


def build() -> tuple[dict[str, Any], dict[str, Any]]:
    cases = [{"id": f"es-{i}", "segment": {"lang": "es"}, "severity": None, "attempts": [attempt(), attempt()]}
             for i in range(12)]
    cases += [
        # untrusted text everywhere a model or a dataset can put it
        {"id": f"evil{EVIL}", "segment": {"lang": EVIL}, "severity": None,
         "attempts": [attempt(fail=("right-category",), text=f"sure! {EVIL} \x00\x1b[31m]]>", detail=EVIL),
                      attempt(error=f"provider said {EVIL}")]},
        {"id": "leak", "segment": {"lang": "en"}, "severity": "critical",
         "attempts": [attempt(fail=("no-pii",), detail="found an email"), attempt()]},
        {"id": "[bold]markup[/bold]", "segment": {"lang": "en"}, "severity": None, "attempts": [attempt(), attempt()]},
    ]
    run = {"run_id": "r-7", "feature": "extract-intent", "release": "v2", "dataset": "evals/intent.jsonl",
           "started_at": 1.0, "finished_at": 2.0, "repeat": 2, "checks": CHECKS, "cases": cases}
    return run, summarize(run)


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_self_contained_and_escapes_untrusted_text() -> None:
    run, summary = build()
    gate = evaluate(GateSpec(min_weighted_score=0.99, max_regression="significant"), summary)
    page = report.html(run, summary, gate, compare(run, run))
    parser = Tags()
    parser.feed(page)
    parser.close()
    assert "script" not in parser.tags
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in page
    assert EVIL in "".join(parser.text)  # shown to the reader, as text
    assert "\x00" not in page and "\x1b" not in page
    # nothing loaded from anywhere: no src, no href, no CSS url() or @import
    assert not [name for name, _ in parser.attrs if name in ("src", "href")]
    assert "url(" not in page and "@import" not in page
    assert {"svg", "rect", "table", "style"} <= set(parser.tags)
    assert "GATE FAILED" in page
    assert "Against the baseline" in page


def test_html_segment_chart_greys_small_segments() -> None:
    run, summary = build()
    page = report.html(run, summary)
    chart = page[page.index("<svg"): page.index("</svg>")]
    assert chart.count('fill="#4c78a8"') == 2  # all cases and lang=es
    assert chart.count('fill="#c4c8cf"') == 2  # lang=en and the evil one: too few cases
    assert "too few cases (n=2) for a meaningful interval" in chart
    assert chart.count("<path") == 2  # whiskers only where the interval means something
    assert "GATE" not in page  # no gate, no verdict


def test_junit_counts_and_escaping() -> None:
    run, summary = build()
    gate = evaluate(GateSpec(min_pass_rate=0.5, min_weighted_score=0.99, max_regression="any"), summary)
    xml = report.junit(run, summary, gate)
    root = ET.fromstring(xml.encode())
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "extract-intent"
    cases = suite.findall("testcase")
    assert len(cases) == 15 + 4  # every case, every rule
    failures = {c.get("name"): c.find("failure") for c in cases if c.find("failure") is not None}
    assert set(failures) == {f"evil{EVIL}", "leak", "critical_failures", "min_weighted_score"}
    assert suite.get("tests") == "19" and suite.get("failures") == "4" and suite.get("skipped") == "1"
    evil = failures[f"evil{EVIL}"]
    assert evil is not None and evil.get("type") == "check"
    assert evil.get("message") == f"failed checks: right-category | errors: provider said {EVIL}"
    assert "\x00" not in (evil.text or "") and "sure! " + EVIL in (evil.text or "")
    leak = failures["leak"]
    assert leak is not None and leak.get("type") == "critical" and "no-pii: found an email" in (leak.text or "")
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert [c.get("name") for c in skipped] == ["max_regression"]
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["run_id"] == "r-7" and float(properties["pass_rate"]) == summary["pass_rate"]["value"]


def test_junit_without_gate() -> None:
    run, summary = build()
    suite = ET.fromstring(report.junit(run, summary)).find("testsuite")
    assert suite is not None and suite.get("tests") == "15" and suite.get("failures") == "2"


def test_to_json_has_everything_and_serializes() -> None:
    run, summary = build()
    gate = evaluate(GateSpec(), summary)
    document = report.to_json(run, summary, gate, compare(run, run))
    assert json.loads(json.dumps(document))["run_id"] == "r-7"
    for key in ("pass_rate", "weighted_score"):
        assert {"value", "low", "high"} <= set(document[key])
    assert set(document["segments"]) == {"lang=en", "lang=es", f"lang={EVIL}"}
    assert document["gate"]["passed"] is False and document["gate"]["rules"][0]["cases"] == ["leak"]
    assert document["comparison"]["counts"]["common"] == 15
    leak = next(c for c in document["cases"] if c["id"] == "leak")
    assert leak["severity"] == "critical" and leak["critical_failed"] and not leak["passed"]
    first = leak["attempts"][0]
    assert first["checks"]["no-pii"] == {"passed": False, "score": 0.0, "detail": "found an email"}
    assert first["passed"] is False and first["failed_checks"] == ["no-pii"] and first["trace_id"] == "trace-1"


def test_terminal_prints_tables_and_does_not_render_markup_from_data() -> None:
    run, summary = build()
    gate = evaluate(GateSpec(min_pass_rate=0.95), summary)
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None)
    report.terminal(summary, gate, compare(run, run), console=console)
    out = buffer.getvalue()
    for text in ("Overall", "Segments", "Checks", "Failing cases (2)", "Gate", "gate FAILED", "pass rate",
                 "too few cases (n=2)", "no significant change", "leak (critical)", f"evil{EVIL}"):
        assert text in out, text
    # names from the dataset are shown as they are, never read as rich markup
    buffer = io.StringIO()
    report.terminal({**summary, "feature": "[red]x[/red]"}, console=Console(file=buffer, width=200, color_system=None))
    assert "[red]x[/red]" in buffer.getvalue()
