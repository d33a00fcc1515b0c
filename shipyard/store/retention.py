"""Retention and erasure over a store: purging traces past their feature's ``retention.traces_days``, and
erasing everything about one subject. Both leave an entry in the audit log. The server runs the purge on
a schedule (``server.purge_interval_s``); ``shipyard retention run`` and ``shipyard forget`` run them once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .content import subject_digest

if TYPE_CHECKING:
    from ..config import ConfigModel
    from . import Store

DAY_S = 86400.0


def cutoffs(model: ConfigModel, now: float) -> tuple[dict[str, float], float | None]:
    """Per feature of the config, the start time before which its traces go (features that keep theirs
    forever are absent), and the cutoff for features no longer in the config (the top-level retention)."""
    out: dict[str, float] = {}
    for name, spec in model.features.items():
        days = (spec.retention or model.retention).traces_days
        if days is not None:
            out[name] = now - days * DAY_S
    default = model.retention.traces_days
    # A feature that keeps forever must not be swept up as "not in cutoffs": give it no cutoff at all.
    keep = [n for n, s in model.features.items() if (s.retention or model.retention).traces_days is None]
    if default is not None and keep:
        out.update(dict.fromkeys(keep, float("-inf")))
    return out, (now - default * DAY_S if default is not None else None)


def purge(store: Store, model: ConfigModel, actor: str, *, now: float | None = None) -> dict[str, int]:
    """Delete expired traces; an audit entry ``retention.purged`` names how many per feature."""
    now = time.time() if now is None else now
    by_feature, default = cutoffs(model, now)
    deleted = store.purge(by_feature, default)
    if deleted:
        store.audit.append(actor, "retention.purged", "traces",
                           {"deleted": deleted, "total": sum(deleted.values())})
    return deleted


def forget(store: Store, subject: str, actor: str) -> dict[str, Any]:
    """Erase every trace about ``subject``; the audit entry ``subject.erased`` names the subject by its
    digest (the id itself would be personal data kept forever in an append-only log)."""
    n = store.forget(subject)
    entry = store.audit.append(actor, "subject.erased", subject_digest(subject), {"traces": n})
    return {"subject": subject_digest(subject), "traces": n, "audit_seq": entry["seq"]}
