"""Query auditing on entity sets: what is refused, what is not, and that it persists.

The store-backed tests also run on PostgreSQL when ``DSB_TEST_POSTGRES_URL`` names one
(``python tests/pg_support.py pytest tests/privacy``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DifferencingRisk
from gateway.privacy.auditing import (
    Auditor,
    decode,
    encode,
    entities_differing,
    signature,
)
from gateway.privacy.sets import EntitySet
from gateway.store import Store, open_store

K = 5


POSTGRES_URL = os.environ.get("DSB_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'meta.db'}"
    elif POSTGRES_URL:
        from tests.pg_support import reset_schema

        url = POSTGRES_URL
        reset_schema(url)
    else:
        pytest.skip("set DSB_TEST_POSTGRES_URL to also run against PostgreSQL")
    opened = open_store(url)
    yield opened
    opened.engine.dispose()


def people(ids: range | list[int], measure: str = "income", rows: int = 1) -> EntitySet:
    """Entities as small numbers: the auditor sees only hashes, any uint64 will do."""
    ids = list(ids)
    return EntitySet.of(measure, [1_000_003 * i for i in ids], [rows] * len(ids),
                        f"group of {len(ids)}")


def release(auditor: Auditor, *sets: EntitySet, job: str = "j") -> tuple[int, int]:
    return auditor.check_and_record("agr", job, list(sets), k=K, noun="people")


def test_repeating_a_release_is_allowed_and_stores_nothing_new(store: Store) -> None:
    auditor = Auditor(store)
    assert release(auditor, people(range(100))) == (1, 0)
    assert release(auditor, people(range(100))) == (0, 1)


@pytest.mark.parametrize("removed", [1, 2, K - 1])
def test_differencing_by_fewer_than_k_is_refused(store: Store, removed: int) -> None:
    auditor = Auditor(store)
    release(auditor, people(range(100)), job="first")
    with pytest.raises(DifferencingRisk) as info:
        release(auditor, people(range(removed, 100)))
    message = str(info.value)
    assert "only in the rows of fewer than k=5 people" in message and "job first" in message
    assert f" {removed} " not in message  # the size of the difference is itself private
    assert f"at least {K} people differ" in message  # says what to change


def test_difference_of_k_or_more_is_allowed(store: Store) -> None:
    auditor = Auditor(store)
    release(auditor, people(range(100)))
    release(auditor, people(range(K, 100)))
    release(auditor, people(range(2 * K, 100)))


def test_tracker_padding_a_small_group_is_refused(store: Store) -> None:
    auditor = Auditor(store)
    padding = list(range(10, 200))
    release(auditor, people([1, 2, 3] + padding))  # target group padded
    with pytest.raises(DifferencingRisk):
        release(auditor, people(padding))  # the padding alone


def test_an_entity_with_other_rows_is_seen_by_its_row_count(store: Store) -> None:
    auditor = Auditor(store)
    base = EntitySet.of("*", list(range(100)), [3] * 100, "all")
    release(auditor, base)
    one_row_less = EntitySet.of("*", list(range(100)), [2] + [3] * 99, "all but one flight")
    with pytest.raises(DifferencingRisk):
        release(auditor, one_row_less)


def test_different_measures_do_not_combine(store: Store) -> None:
    auditor = Auditor(store)
    release(auditor, people(range(100), "income"))
    release(auditor, people(range(1, 100), "age"))  # avg(age) cannot be subtracted from sum(income)
    with pytest.raises(DifferencingRisk):
        release(auditor, people(range(1, 100), "income"))


def test_sets_of_one_result_are_checked_against_each_other(store: Store) -> None:
    auditor = Auditor(store)
    with pytest.raises(DifferencingRisk) as info:
        release(auditor, people(range(100)), people(range(2, 100)))
    assert "this same result" in str(info.value)
    # Refused as a whole: nothing of it was stored, so either half alone is fine.
    release(auditor, people(range(2, 100)))


def test_history_survives_a_restart_and_is_shared_between_processes(store: Store) -> None:
    release(Auditor(store), people(range(100)))
    with pytest.raises(DifferencingRisk):
        release(Auditor(store), people(range(1, 100)))  # a fresh process, same store


def test_concurrent_conflicting_releases_one_is_refused(store: Store) -> None:
    auditor, outcomes = Auditor(store), []
    barrier = threading.Barrier(2)

    def go(ids: range) -> None:
        barrier.wait()
        try:
            release(auditor, people(ids))
            outcomes.append("released")
        except DifferencingRisk:
            outcomes.append("refused")

    threads = [threading.Thread(target=go, args=(r,)) for r in (range(100), range(1, 100))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused", "released"]


def test_members_round_trip() -> None:
    idx = np.array([0, 5, 6, 900, 70_000], dtype=np.int64)
    rows = np.array([1, 2, 300, 1, 7], dtype=np.uint64)
    back_idx, back_rows = decode(encode(idx, rows))
    assert back_idx.tolist() == idx.tolist() and back_rows.tolist() == rows.tolist()


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 3000), changed=st.integers(1, 2 * K), seed=st.integers(0, 2**32))
def test_signature_filter_never_hides_a_small_difference(size: int, changed: int,
                                                         seed: int) -> None:
    """Sets differing in d entities differ in at most 2d of the 64 signature buckets."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(10 * size + 10, size=size, replace=False)).astype(np.int64)
    rows = rng.integers(1, 50, size=size).astype(np.uint64)
    other = rows.copy()
    touched = rng.choice(size, size=min(changed, size), replace=False)
    other[touched] += np.uint64(1)
    differing = entities_differing(idx, rows, idx, other)
    buckets = int(np.count_nonzero(signature(idx, rows) != signature(idx, other)))
    assert differing == len(touched) and 1 <= buckets <= 2 * differing
