"""``shipyard incidents`` and ``shipyard owners``: who owns what, and what is on fire."""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from . import ConfigOption, _actor, _open, fail, out

incidents_app = typer.Typer(help="Incidents: list, show, ack, resolve.", invoke_without_command=True)


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) if at else ""


@incidents_app.callback()
def incidents_default(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Open incidents (``shipyard incidents list --all`` for resolved ones too)."""
    if ctx.invoked_subcommand is None:
        incidents_list(config=config, all_=False, feature=None, json=False)


@incidents_app.command("list")
def incidents_list(
    config: ConfigOption = None,
    all_: Annotated[bool, typer.Option("--all", help="Resolved incidents too")] = False,
    feature: Annotated[str | None, typer.Option("--feature", "-f")] = None,
    json: Annotated[bool, typer.Option("--json", help="JSON Lines")] = False,
) -> None:
    """Incidents, newest first."""
    _, store = _open(config)
    rows = store.incidents.list(include_resolved=all_, feature=feature)
    if json:
        for row in rows:
            out.print(orjson.dumps(row).decode(), highlight=False, markup=False, soft_wrap=True)
        return
    table = Table("id", "status", "feature", "duty", "owner", "opened", "title")
    for r in rows:
        table.add_row(str(r["id"]), r["status"], r["feature"], r["duty"], r["owner"], _when(r["opened_at"]), r["title"])
    out.print(table)
    if not rows:
        out.print("no open incidents" if not all_ else "no incidents", highlight=False)


@incidents_app.command("show")
def incidents_show(incident_id: Annotated[int, typer.Argument()], config: ConfigOption = None) -> None:
    """One incident with its timeline."""
    _, store = _open(config)
    incident = store.incidents.get(incident_id)
    if incident is None:
        fail(f"no incident #{incident_id}; `shipyard incidents list --all` lists them", code=1)
    out.print(f"#{incident['id']} {incident['status']}: {incident['title']}", highlight=False, markup=False)
    for event in incident["timeline"]:
        detail = orjson.dumps(event["detail"]).decode() if event["detail"] else ""
        out.print(f"  {_when(event['at'])}  {event['kind']:<16} {detail}", highlight=False, markup=False)


def _transition(incident_id: int, status: str, config: Any) -> None:
    _, store = _open(config)
    incident = store.incidents.get(incident_id)
    if incident is None:
        fail(f"no incident #{incident_id}; `shipyard incidents list --all` lists them", code=1)
    if not store.incidents.transition(incident_id, status, {"by": _actor()}):
        fail(f"incident #{incident_id} is {incident['status']}; it cannot become {status}", code=1)
    store.audit.append(_actor(), f"incident.{status}", str(incident_id), {"feature": incident["feature"]})
    out.print(f"incident #{incident_id} {status}", highlight=False)


@incidents_app.command("ack")
def incidents_ack(incident_id: Annotated[int, typer.Argument()], config: ConfigOption = None) -> None:
    """Acknowledge an incident: someone is on it (audited)."""
    _transition(incident_id, "acknowledged", config)


@incidents_app.command("resolve")
def incidents_resolve(incident_id: Annotated[int, typer.Argument()], config: ConfigOption = None) -> None:
    """Resolve an incident by hand (audited); one whose alert still fires opens again at the next round."""
    _transition(incident_id, "resolved", config)


def owners_command(config: ConfigOption = None) -> None:
    """Who owns each duty of each feature, and where their alerts go."""
    from ..config import DUTIES

    cfg, _ = _open(config)
    table = Table("feature", *DUTIES)
    for name, spec in cfg.model.features.items():
        cells = []
        for duty in DUTIES:
            contact = spec.owners.contact(duty)
            cells.append(contact.name + (f" → {contact.webhook}" if contact.webhook else ""))
        table.add_row(name, *cells)
    out.print(table)
    out.print("alerts: SLO, drift, budget and data quality → incidents; evaluation → evaluation; "
              "guard and policy → risk", highlight=False)
