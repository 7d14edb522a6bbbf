"""The hash covers the canonical JSON of the event, whichever way it is computed."""

import json

from audit_support import Installation, query_event
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.events import (
    FORMAT,
    Action,
    Details,
    canonical_json,
    event_message,
    hash_message,
    message_from_row,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(extra=st.dictionaries(st.text(min_size=1).filter(lambda k: k not in Details.model_fields),
                             json_values, max_size=4),
       user=st.text(min_size=1, max_size=20), sql=st.text(),
       agreement=st.none() | st.text(max_size=20), job=st.none() | st.text(max_size=20))
def test_stored_splice_equals_canonical_json(extra: dict[str, object], user: str, sql: str,
                                             agreement: str | None, job: str | None) -> None:
    details = Details(sql=sql, **extra).model_dump(mode="json", exclude_none=True)
    datasets = [{"id": "flights", "version": 2}]
    spliced = message_from_row(7, "2026-11-27T00:00:00.000001Z", "query.executed", user,
                               "researcher", "Org \u4e2d", agreement, job,
                               canonical_json(datasets), canonical_json(details), "ab" * 32)
    reference = json.dumps(
        [FORMAT, 7, "2026-11-27T00:00:00.000001Z", "query.executed", user, "researcher",
         "Org \u4e2d", agreement, job, datasets, details, "ab" * 32],
        sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert spliced == reference


def test_parsed_event_rehashes_to_stored_hash(install: Installation) -> None:
    receipt = install.log.append(query_event(1))
    assert hash_message(event_message(receipt.event)) == receipt.event_hash
    assert install.log.receipt(1).event == receipt.event  # what append returned is stored
    row = install.sql().execute("SELECT hash FROM audit_events WHERE seq = 1").fetchone()
    assert row == (receipt.event_hash,)


def test_every_listed_action_exists() -> None:
    issue = ["query.submitted", "query.rewritten", "query.rejected", "query.executed",
             "query.failed", "sandbox.spawned", "sandbox.stopped", "agreement.granted",
             "agreement.suspended", "agreement.revoked", "agreement.expired",
             "dataset.published", "dataset.suspended", "dataset.withdrawn", "export.requested",
             "export.approved", "export.denied", "objection.filed", "objection.answered",
             "complaint.filed", "complaint.answered", "auth.login"]
    assert set(issue) <= {a.value for a in Action}


def test_head_row_created_by_migration(install: Installation) -> None:
    con = install.sql()
    assert con.execute("SELECT id, seq, hash FROM audit_head").fetchall() == [(1, 0, "0" * 64)]
