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
    forever get no cutoff), and the cutoff for the traces of features the config does not name: only
    with the top-level ``purge_unknown_features`` (another service's config may name them)."""
    out: dict[str, float] = {}
    for name in model.features:
        days = model.retention_of(name).traces_days
        out[name] = now - days * DAY_S if days is not None else float("-inf")
    default = model.retention.traces_days
    if not model.retention.purge_unknown_features or default is None:
        return out, None
    return out, now - default * DAY_S


def purge(store: Store, model: ConfigModel, actor: str, *, now: float | None = None) -> dict[str, int]:
    """Delete expired traces; an audit entry ``retention.purged`` names how many per feature."""
    now = time.time() if now is None else now
    by_feature, default = cutoffs(model, now)
    deleted = store.purge(by_feature, default)
    # Evaluation records (online scores, cached answers, old runs) age out with the top-level retention.
    days = model.retention.traces_days
    evals = store.evals.purge(now - days * DAY_S) if days is not None else 0
    if deleted or evals:
        store.audit.append(actor, "retention.purged", "traces",
                           {"deleted": deleted, "total": sum(deleted.values()), "eval_rows": evals})
    return deleted


def forget(store: Store, subject: str, actor: str) -> dict[str, Any]:
    """Erase every trace about ``subject``; the audit entry ``subject.erased`` names the subject by its
    digest (the id itself would be personal data kept forever in an append-only log)."""
    online = store.evals.forget_subject(subject_digest(subject))
    n = store.forget(subject)  # reclaims the freed space of both
    entry = store.audit.append(actor, "subject.erased", subject_digest(subject),
                               {"traces": n, "online_scores": online})
    return {"subject": subject_digest(subject), "traces": n, "online_scores": online, "audit_seq": entry["seq"]}
