"""Dataset lifecycle (available / suspended / withdrawn) and mounts for the engine."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.datasets import keys
from gateway.errors import Conflict, DatasetError, DsbError, NotFound
from gateway.policy.loading import PolicySet
from gateway.policy.models import DatasetStatus
from gateway.settings import Settings
from gateway.store.db import Store
from gateway.store.models import DatasetState, DatasetVersion, utcnow
from sandbox.engine import DatasetMount

# Which status each lifecycle action may start from, and where it leads.
TRANSITIONS: dict[str, tuple[frozenset[DatasetStatus], DatasetStatus]] = {
    "suspend": (frozenset({DatasetStatus.available}), DatasetStatus.suspended),
    "resume": (frozenset({DatasetStatus.suspended}), DatasetStatus.available),
    "withdraw": (frozenset({DatasetStatus.available, DatasetStatus.suspended}),
                 DatasetStatus.withdrawn),
}


class DatasetUnavailable(DsbError):
    http_status = 403


def status(store: Store, policies: PolicySet, dataset_id: str) -> DatasetStatus:
    """The effective status: the last lifecycle action, else what the policy declares."""
    declared = policies.dataset(dataset_id).status
    with store.session() as session:
        state = session.get(DatasetState, dataset_id)
        return DatasetStatus(state.status) if state else declared


def statuses(store: Store, policies: PolicySet, dataset_ids: Iterable[str]
             ) -> dict[str, DatasetStatus]:
    """``status`` of several datasets in one query (the per-request path)."""
    with store.session() as session:
        return statuses_in(session, policies, dataset_ids)


def statuses_in(session: Session, policies: PolicySet, dataset_ids: Iterable[str]
                ) -> dict[str, DatasetStatus]:
    """``statuses`` inside a transaction the caller already holds."""
    ids = list(dataset_ids)
    declared = {i: policies.dataset(i).status for i in ids}
    rows = session.scalars(select(DatasetState).where(DatasetState.dataset_id.in_(ids)))
    found = {row.dataset_id: DatasetStatus(row.status) for row in rows}
    return {i: found.get(i, declared[i]) for i in ids}


def latest_versions(store: Store, dataset_ids: Iterable[str]) -> dict[str, DatasetVersion]:
    """Newest published version of each dataset that has one (cached: read per query)."""
    ids = tuple(dataset_ids)
    return dict(store.cache.get(("latest", ids), lambda: _latest(store, ids)))


def _latest(store: Store, ids: tuple[str, ...]) -> dict[str, DatasetVersion]:
    newest: dict[str, DatasetVersion] = {}
    with store.session() as session:
        # A dataset has few versions: ordering them beats a grouped self-join here.
        for row in session.scalars(select(DatasetVersion)
                                   .where(DatasetVersion.dataset_id.in_(ids))
                                   .order_by(DatasetVersion.version)):
            newest[row.dataset_id] = row
    return newest


def change_status(
    store: Store, policies: PolicySet, dataset_id: str, action: str, *, reason: str, actor: str,
    dry_run: bool = False,
) -> DatasetStatus:
    """Move a dataset to its next status; ``dry_run`` only checks that the move is allowed."""
    if action not in TRANSITIONS:
        raise DatasetError(f"unknown action {action!r}; use suspend, resume or withdraw",
                           code="invalid_action")
    if not reason.strip():
        raise DatasetError(f"{action} needs a reason (--reason)", code="reason_required")
    allowed_from, target = TRANSITIONS[action]
    declared = policies.dataset(dataset_id).status
    with store.session() as session:
        state = session.get(DatasetState, dataset_id, with_for_update=True)
        current = DatasetStatus(state.status) if state else declared
        if current not in allowed_from:
            raise Conflict(f"cannot {action} dataset {dataset_id!r}: it is {current.value}",
                           code="invalid_transition")
        if dry_run:
            return target
        if state is None:
            state = DatasetState(dataset_id=dataset_id)
            session.add(state)
        state.status = target.value
        state.reason = reason
        state.changed_by = actor
        state.changed_at = utcnow()
    return target


def latest_version(store: Store, dataset_id: str) -> DatasetVersion | None:
    with store.session() as session:
        return session.scalars(
            select(DatasetVersion)
            .where(DatasetVersion.dataset_id == dataset_id)
            .order_by(DatasetVersion.version.desc())
            .limit(1)
        ).first()


def mounts(
    settings: Settings,
    store: Store,
    dataset_ids: list[str] | tuple[str, ...],
    *,
    policies: PolicySet | None = None,
) -> list[DatasetMount]:
    """Newest version of each dataset with its unwrapped key, ready for ``open_engine``.

    Refuses suspended or withdrawn datasets when ``policies`` is given (so the caller
    learns it before anything runs).
    """
    if policies is not None:
        for dataset_id, current in statuses(store, policies, dataset_ids).items():
            if current is not DatasetStatus.available:
                raise DatasetUnavailable(f"dataset {dataset_id!r} is {current.value}",
                                         code=f"dataset_{current.value}")
    return mounts_of(settings, dataset_ids, latest_versions(store, dataset_ids))


def mounts_of(settings: Settings, dataset_ids: Iterable[str],
              versions: dict[str, DatasetVersion]) -> list[DatasetMount]:
    """Mounts for versions already looked up (``latest_versions``)."""
    master = keys.load_master_key(settings.master_key_path)
    out: list[DatasetMount] = []
    for dataset_id in dataset_ids:
        row = versions.get(dataset_id)
        if row is None:
            raise NotFound(f"dataset {dataset_id!r} has no published version; "
                           "publish one with `dsb dataset publish`", code="dataset_not_published")
        path = settings.datasets_path / dataset_id / row.file_name
        key = keys.unwrap_cached(master, row.wrapped_key, dataset_id, row.version)
        out.append(DatasetMount(dataset_id, path, key))
    return out
