"""Incidents: one open per feature and alert key (deduplicated by a partial unique index, so replicas that
see the same alert open it once), each with a timeline of what happened to it (opened, notified, a
delivery that failed, acknowledged, resolved)."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from ._schema import incident_events, incidents, traces

OPEN = ("open", "acknowledged")


def _plain(row: Any) -> dict[str, Any]:
    return {str(k): v for k, v in row.items()}


class IncidentStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def open(self, *, feature: str, key: str, duty: str, owner: str, title: str,
             details: dict[str, Any]) -> dict[str, Any] | None:
        """Open an incident, or None when one is already open for ``feature`` and ``key``."""
        now = time.time()
        try:
            with self.engine.begin() as conn:
                incident_id = conn.execute(incidents.insert().values(
                    feature=feature, key=key, duty=duty, owner=owner, status="open", title=title,
                    details=details, opened_at=now,
                )).inserted_primary_key[0]
                conn.execute(incident_events.insert().values(incident_id=incident_id, at=now, kind="opened",
                                                             detail=details))
        except IntegrityError:
            return None
        return self.get(int(incident_id))

    def find_open(self, feature: str, key: str) -> dict[str, Any] | None:
        query = sa.select(incidents).where(incidents.c.feature == feature, incidents.c.key == key,
                                           incidents.c.status.in_(OPEN))
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _plain(row)

    def get(self, incident_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).mappings().first()
            if row is None:
                return None
            events = conn.execute(sa.select(incident_events).where(incident_events.c.incident_id == incident_id)
                                  .order_by(incident_events.c.at, incident_events.c.id)).mappings()
            return {**_plain(row), "timeline": [{k: v for k, v in _plain(e).items() if k != "incident_id"}
                                                for e in events]}

    def list(self, *, include_resolved: bool = False, feature: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        query = sa.select(incidents).order_by(incidents.c.opened_at.desc()).limit(limit)
        if not include_resolved:
            query = query.where(incidents.c.status.in_(OPEN))
        if feature:
            query = query.where(incidents.c.feature == feature)
        with self.engine.connect() as conn:
            return [_plain(r) for r in conn.execute(query).mappings()]

    def event(self, incident_id: int, kind: str, detail: dict[str, Any] | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(incident_events.insert().values(incident_id=incident_id, at=time.time(), kind=kind,
                                                         detail=detail))

    def transition(self, incident_id: int, status: str, detail: dict[str, Any] | None = None) -> bool:
        """acknowledged or resolved; False if the incident is not in a state that allows it."""
        allowed = {"acknowledged": ("open",), "resolved": OPEN}[status]
        now = time.time()
        stamp = {"acknowledged": {"acked_at": now}, "resolved": {"resolved_at": now}}[status]
        with self.engine.begin() as conn:
            changed = conn.execute(incidents.update()
                                   .where(incidents.c.id == incident_id, incidents.c.status.in_(allowed))
                                   .values(status=status, **stamp)).rowcount
            if changed:
                conn.execute(incident_events.insert().values(incident_id=incident_id, at=now, kind=status,
                                                             detail=detail))
        return bool(changed)

    # -- what alerts are computed from ---------------------------------------------------------------

    def window_counts(self, feature: str, since: float, latency_ms: float | None) -> dict[str, int]:
        """Calls of a feature since ``since`` (an evaluation's own calls excluded): total, server errors
        (5xx), and those slower than ``latency_ms``, answered or not."""
        slow = (sa.func.sum(sa.case((traces.c.latency_ms > latency_ms, 1), else_=0)) if latency_ms is not None
                else sa.literal(0))
        query = sa.select(
            sa.func.count(),
            sa.func.sum(sa.case((traces.c.http_status >= 500, 1), else_=0)),
            slow,
        ).where(traces.c.feature == feature, traces.c.started_at >= since,
                sa.or_(traces.c.tenant.is_(None), traces.c.tenant != "eval"))
        with self.engine.connect() as conn:
            total, errors, slow_n = conn.execute(query).one()
        return {"total": int(total or 0), "errors": int(errors or 0), "slow": int(slow_n or 0)}

    def quality_counts(self, feature: str, since: float) -> dict[str, int]:
        """Calls of a feature since ``since``: total, and those whose input had a data-quality problem or
        broke the input schema (refused with 422)."""
        bad = sa.or_(traces.c.quality > 0, traces.c.error_type == "input_validation_failed")
        query = sa.select(sa.func.count(), sa.func.sum(sa.case((bad, 1), else_=0))).where(
            traces.c.feature == feature, traces.c.started_at >= since,
            sa.or_(traces.c.tenant.is_(None), traces.c.tenant != "eval"))
        with self.engine.connect() as conn:
            total, problems = conn.execute(query).one()
        return {"total": int(total or 0), "problems": int(problems or 0)}

    def spent_usd(self, feature: str, since: float) -> float:
        """What a feature's calls cost since ``since`` (an evaluation's own included: it is real money)."""
        query = sa.select(sa.func.coalesce(sa.func.sum(traces.c.cost_usd), 0.0)).where(
            traces.c.feature == feature, traces.c.started_at >= since)
        with self.engine.connect() as conn:
            return float(conn.execute(query).scalar_one())

    def severe_findings(self, feature: str, since: float, severity: str = "critical") -> int:
        query = sa.select(sa.func.count()).select_from(traces).where(
            traces.c.feature == feature, traces.c.started_at >= since, traces.c.severity == severity,
            sa.or_(traces.c.tenant.is_(None), traces.c.tenant != "eval"))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
