"""``shipyard eval``: run a dataset through a feature, gate a run, compare two runs, approve a baseline,
and grow a dataset from production traces."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import ShipyardError
from . import ConfigOption, _actor, _duration, _gateway, _open, err, fail, out

eval_app = typer.Typer(help="Evaluation: run, gate, compare, approve, datasets.", no_args_is_help=True)
dataset_app = typer.Typer(help="Datasets of cases.", no_args_is_help=True)
eval_app.add_typer(dataset_app, name="dataset")

JsonOut = Annotated[Path | None, typer.Option("--json", help="Write the JSON report here")]
HtmlOut = Annotated[Path | None, typer.Option("--html", help="Write the HTML report here (one file, offline)")]
JunitOut = Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML here (for CI systems)")]


def _closed_at_end(ctx: typer.Context, store: Any) -> None:
    """Close the store's connections when the command ends, however it ends (a PostgreSQL connection left
    to the garbage collector is an error at exit)."""
    ctx.call_on_close(store.close)


def _eval_spec(gateway: Any, feature: str) -> Any:
    try:
        spec = gateway.feature(feature).spec
    except ShipyardError as exc:
        fail(exc.message)
    if spec.eval is None:
        fail(f"feature {feature!r} has no eval: section; add one with its checks, e.g. "
             "eval: {checks: [{name: right, type: exact}]}")
    return spec.eval


def _write_reports(run: dict[str, Any], summary: dict[str, Any], gate_result: Any, comparison: Any,
                   json_out: Path | None, html_out: Path | None, junit_out: Path | None) -> None:
    from ..eval import report

    try:
        if json_out is not None:
            data = report.to_json(run, summary, gate_result, comparison)
            json_out.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        if html_out is not None:
            html_out.write_text(report.html(run, summary, gate_result, comparison), encoding="utf-8")
        if junit_out is not None:
            junit_out.write_text(report.junit(run, summary, gate_result), encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write the report: {exc}")


def _gate(gateway: Any, run: dict[str, Any], summary: dict[str, Any], baseline_id: str | None) -> tuple[Any, Any]:
    """(gate result, comparison with the baseline) for a run; None for either when there is none."""
    from ..eval.compare import compare
    from ..eval.gate import evaluate

    evals = gateway.store.evals
    spec = gateway.config.features[run["feature"]].eval
    baseline_row = evals.find_run(baseline_id) if baseline_id else evals.baseline(run["feature"])
    if baseline_id and baseline_row is None:
        fail(f"no run {baseline_id!r} to compare with; `shipyard eval runs` lists them")
    comparison = None
    if baseline_row is not None and baseline_row["run_id"] != run["run_id"]:
        comparison = compare(evals.load_run(baseline_row["run_id"]), run)
    gate_result = evaluate(spec.gate, summary, comparison) if spec is not None and spec.gate is not None else None
    return gate_result, comparison


@eval_app.command("run")
def eval_run(
    ctx: typer.Context,
    feature: Annotated[str, typer.Argument(help="The feature to evaluate")],
    config: ConfigOption = None,
    dataset: Annotated[Path | None, typer.Option("--dataset", "-d", help="JSONL/CSV cases [default: eval.dataset]")] = None,
    release: Annotated[str | None, typer.Option("--release", "-r", help="A label for what is evaluated (v2, a commit)")] = None,
    repeat: Annotated[int, typer.Option("--repeat", "-n", min=1, max=50, help="Runs per case (consistency)")] = 1,
    concurrency: Annotated[int, typer.Option("--concurrency", "-j", min=1, max=256, help="Cases at once")] = 4,
    resume: Annotated[str | None, typer.Option("--resume", help="Finish an interrupted run (its id)")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ask the models again, ignoring cached answers")] = False,
    json_out: JsonOut = None,
    html_out: HtmlOut = None,
    junit_out: JunitOut = None,
) -> None:
    """Run every case through the feature's production pipeline and score it; prints the run id last."""
    from ..eval.cases import DatasetError, load_cases
    from ..eval.runner import Runner, file_digest
    from ..eval.scoring import summarize

    gateway = _gateway(config)
    _closed_at_end(ctx, gateway.store)
    spec = _eval_spec(gateway, feature)
    evals = gateway.store.evals
    if resume is not None:
        gateway.store.migrate()
        row = evals.find_run(resume)
        if row is None:
            fail(f"no run {resume!r} to resume; `shipyard eval runs` lists them")
        if row["feature"] != feature:
            fail(f"run {row['run_id']} is of feature {row['feature']!r}, not {feature!r}")
        if row["status"] == "done":
            fail(f"run {row['run_id']} is already finished; `shipyard eval gate {row['run_id']}` judges it")
        resume, repeat = row["run_id"], row["repeat"]
        dataset = dataset or (Path(row["dataset"]) if row["dataset"] else None)
    source = dataset or (Path(gateway.config.base_dir) / spec.dataset if spec.dataset else None)
    if source is None:
        fail(f"no dataset: pass --dataset FILE or set eval.dataset for {feature}")
    try:
        cases = load_cases(source)
    except DatasetError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"cannot read the dataset {source}: {exc.strerror or exc}")
    runner = Runner(gateway, feature, spec.checks, repeat=repeat, concurrency=concurrency, use_cache=not no_cache)
    try:
        digest = file_digest(source)
    except OSError as exc:
        fail(f"cannot read the dataset {source}: {exc.strerror or exc}")
    if resume is not None:
        conflict = runner.resume_conflict(row, evals.results(resume), cases)
        if conflict is not None:
            fail(f"cannot resume: {conflict}")
        if row["dataset_digest"] not in (None, digest):
            err.print(f"warning: {source} changed since run {resume} started (the cases it has done did not)",
                      highlight=False, markup=False)
    state: dict[str, Any] = {"run_id": resume}

    async def main() -> None:
        async with gateway:
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
                          console=err, transient=False) as progress:
                done = await asyncio.to_thread(evals.results, resume) if resume else {}
                task = progress.add_task(feature, total=len(cases), completed=len(done), failed=0)

                def tick(case_id: str, passed: bool) -> None:
                    failed = progress.tasks[0].fields["failed"] + (0 if passed else 1)
                    progress.update(task, advance=1, failed=failed)

                if resume is None:
                    state["run_id"] = await runner.start(release=release, dataset=str(source), dataset_digest=digest)
                await runner.run(cases, run_id=state["run_id"], on_case=tick)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        run_id = state["run_id"]
        err.print(f"interrupted; the finished cases are kept. Resume with: shipyard eval run {feature} "
                  f"--resume {run_id}" if run_id else "interrupted before the run started", highlight=False)
        raise typer.Exit(130) from None
    except ShipyardError as exc:
        fail(exc.message)
    run = evals.load_run(state["run_id"])
    summary = summarize(run)
    evals.finish_run(run["run_id"], summary)
    gate_result, comparison = _gate(gateway, run, summary, None)
    from ..eval import report

    report.terminal(summary, gate_result, comparison, console=out)
    if runner.ctx.judge_cost_usd:
        out.print(f"judge cost: ${runner.ctx.judge_cost_usd:.4f}", highlight=False)
    _write_reports(run, summary, gate_result, comparison, json_out, html_out, junit_out)
    out.print(run["run_id"], highlight=False, markup=False)


def _finished_run(gateway: Any, run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from ..eval.scoring import summarize

    gateway.store.migrate()
    row = gateway.store.evals.find_run(run_id)
    if row is None:
        fail(f"no run {run_id!r}; `shipyard eval runs` lists them")
    run = gateway.store.evals.load_run(row["run_id"])
    if row["status"] != "done":
        fail(f"run {row['run_id']} did not finish; `shipyard eval run {row['feature']} --resume {row['run_id']}`")
    if row["feature"] not in gateway.config.features:
        fail(f"run {row['run_id']} is of feature {row['feature']!r}, which this config does not have")
    return run, row["summary"] or summarize(run)


@eval_app.command("gate")
def eval_gate(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run to judge (an id or a unique prefix)")],
    config: ConfigOption = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="Compare with this run [default: approved]")] = None,
    json_out: JsonOut = None,
    html_out: HtmlOut = None,
    junit_out: JunitOut = None,
    notify: Annotated[bool, typer.Option(
        "--notify", help="A failed gate opens an incident for the feature's evaluation owner (webhook); a "
                         "passing one resolves it. For CI on the main branch, not for experiments.",
    )] = False,
) -> None:
    """Judge a run by its feature's eval.gate: exit 0 pass, 1 fail, 2 usage or data error."""
    from ..eval import report

    gateway = _gateway(config)
    _closed_at_end(ctx, gateway.store)
    run, summary = _finished_run(gateway, run_id)
    spec = gateway.config.features[run["feature"]].eval
    if spec is None or spec.gate is None:
        fail(f"feature {run['feature']!r} has no eval.gate; add one, e.g. "
             "gate: {critical_failures: 0, min_weighted_score: 0.9}")
    gate_result, comparison = _gate(gateway, run, summary, baseline)
    report.terminal(summary, gate_result, comparison, console=out)
    _write_reports(run, summary, gate_result, comparison, json_out, html_out, junit_out)
    if notify:
        _notify_gate(gateway, run, gate_result)
    if not gate_result.passed:
        for rule in gate_result.rules:
            if not rule.passed and not rule.skipped:
                cases = f" (cases: {', '.join(rule.cases[:20])}{'…' if len(rule.cases) > 20 else ''})" if rule.cases else ""
                err.print(f"gate failed: {rule.rule}: {rule.message}{cases}", highlight=False, markup=False)
        raise typer.Exit(1)
    out.print(f"gate passed: {run['run_id']}", highlight=False)


def _notify_gate(gateway: Any, run: dict[str, Any], gate_result: Any) -> None:
    """The gate's verdict as the ``eval:gate`` alert of the run's feature (evaluation duty): a failure
    opens an incident (once while open) and notifies its owner; a pass resolves it."""
    from ..monitor.alerts import Alert, Monitor

    feature = run["feature"]
    failed = [r for r in gate_result.rules if not r.passed and not r.skipped]
    title = (f"{feature}: evaluation gate failed for run {run['run_id']}"
             + (f" (release {run['release']})" if run.get("release") else "")
             + ": " + "; ".join(f"{r.rule}: {r.message}" for r in failed)) if failed else \
        f"{feature}: evaluation gate passed for run {run['run_id']}"
    details = {"run_id": run["run_id"], "release": run.get("release"),
               "failed": [{"rule": r.rule, "message": r.message, "cases": list(r.cases[:20])} for r in failed]}
    alert = Alert("eval:gate", "evaluation", bool(failed), title[:2000], details)

    async def settle() -> dict[str, Any] | None:
        monitor = Monitor(gateway.config, gateway.store.incidents, None)
        try:
            return await monitor.settle(feature, alert, by=f"eval gate {run['run_id']}", wait=True)
        finally:
            await monitor.notifier.aclose()

    change = asyncio.run(settle())
    if change is not None:
        owner = gateway.config.features[feature].owners.contact("evaluation")
        what = "opened" if "opened" in change else "resolved"
        incident = change.get("opened") or change.get("resolved")
        err.print(f"incident #{incident} {what} for the evaluation owner {owner.name}", highlight=False, markup=False)


@eval_app.command("compare")
def eval_compare(
    ctx: typer.Context,
    baseline: Annotated[str, typer.Argument(help="The baseline run")],
    candidate: Annotated[str, typer.Argument(help="The candidate run")],
    config: ConfigOption = None,
    json_out: JsonOut = None,
) -> None:
    """Per-case changes, per-segment deltas and whether the difference is real (McNemar, paired bootstrap)."""
    from ..eval.compare import compare

    gateway = _gateway(config)
    _closed_at_end(ctx, gateway.store)
    base_run, _ = _finished_run(gateway, baseline)
    cand_run, _ = _finished_run(gateway, candidate)
    result = compare(base_run, cand_run)
    counts = result["counts"]
    if not counts.get("common"):
        fail(f"nothing to compare: runs {base_run['run_id']} and {cand_run['run_id']} have no case in common "
             f"({counts.get('only_baseline', 0)} case(s) only in the baseline, {counts.get('only_candidate', 0)} "
             "only in the candidate); compare two runs of the same dataset")

    def signed(value: Any) -> str:
        return "-" if value is None else f"{value:+.3f}"

    table = Table("fixed", "broken", "unchanged pass", "unchanged fail", "pass rate Δ", "score Δ (95% CI)", "p")
    delta = result["score_delta"]
    table.add_row(str(counts.get("fixed", 0)), str(counts.get("broken", 0)), str(counts.get("unchanged_pass", 0)),
                  str(counts.get("unchanged_fail", 0)), signed(result.get("pass_rate_delta")),
                  f"{signed(delta.get('mean'))} ({signed(delta.get('low'))} to {signed(delta.get('high'))})"
                  if delta.get("mean") is not None else "-",
                  "-" if result.get("p_value") is None else f"{result['p_value']:.4f}")
    out.print(table)
    if result.get("p_value") is None:
        verdict = "no test (no p-value)"
    else:
        verdict = ("a significant regression" if result["regression"] else "a significant improvement"
                   if result["improvement"] else "not significant (could be noise)")
    out.print(f"{result['test']}: {verdict}", highlight=False)
    for warning in result.get("warnings") or []:
        err.print(f"warning: {warning}", highlight=False, markup=False)
    if json_out is not None:
        try:
            json_out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        except OSError as exc:
            fail(f"cannot write {json_out}: {exc}")


@eval_app.command("approve")
def eval_approve(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run that becomes its feature's baseline")],
    config: ConfigOption = None,
) -> None:
    """Mark a finished run the approved baseline of its feature (audited)."""
    gateway = _gateway(config)
    _closed_at_end(ctx, gateway.store)
    run, _ = _finished_run(gateway, run_id)
    gateway.store.evals.approve(run["run_id"], _actor())
    out.print(f"approved {run['run_id']} as the baseline of {run['feature']}", highlight=False)


@eval_app.command("runs")
def eval_runs(
    ctx: typer.Context,
    config: ConfigOption = None,
    feature: Annotated[str | None, typer.Option("--feature", "-f", help="Only this feature")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 20,
) -> None:
    """Recent evaluation runs, newest first."""
    _, store = _open(config)
    _closed_at_end(ctx, store)
    table = Table("run", "feature", "release", "status", "started", "pass rate", "weighted", "baseline")
    for row in store.evals.list_runs(feature, limit):
        s = row["summary"] or {}
        table.add_row(row["run_id"], row["feature"], row["release"] or "", row["status"],
                      time.strftime("%Y-%m-%d %H:%M", time.gmtime(row["started_at"])),
                      f"{s['pass_rate']['value']:.3f}" if s.get("pass_rate") else "",
                      f"{s['weighted_score']['value']:.3f}" if s.get("weighted_score") else "",
                      "yes" if row["approved_at"] else "")
    out.print(table)


@dataset_app.command("add")
def dataset_add(
    ctx: typer.Context,
    out_file: Annotated[Path, typer.Argument(help="The JSONL dataset to append to (created if missing)")],
    feature: Annotated[str, typer.Option("--feature", "-f", help="Whose traces")],
    from_traces: Annotated[bool, typer.Option("--from-traces", help="Take the cases from recorded traces")] = False,
    config: ConfigOption = None,
    since: Annotated[str, typer.Option("--since", help="Traces this recent, e.g. 7d")] = "7d",
    status: Annotated[str | None, typer.Option("--status", help="Only traces with this status (ok, fallback, error)")] = "ok",
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1_000_000)] = 100,
    with_expected: Annotated[bool, typer.Option("--with-expected", help="Keep the recorded answer as expected")] = False,
) -> None:
    """Turn recorded (already redacted) production traces into cases, so real traffic feeds the golden set."""
    from ..eval.cases import DatasetError, cases_from_traces, write_cases

    if not from_traces:
        fail("say where the cases come from: --from-traces")
    _, store = _open(config)
    _closed_at_end(ctx, store)
    rows = store.traces_with_content(feature=feature, since=time.time() - _duration("--since", since),
                                     status=status, limit=limit)
    cases = cases_from_traces(rows, with_expected=with_expected)
    try:
        written = write_cases(out_file, cases)
    except DatasetError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"cannot write {out_file}: {exc.strerror or exc}")
    skipped = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in sorted(cases.skipped.items()))
    out.print(f"added {written} case(s) to {out_file} from {len(rows)} trace(s)"
              + (f"; skipped {skipped}" if skipped else ""), highlight=False)
