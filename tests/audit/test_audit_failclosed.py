"""If the audit cannot be written or sealed, append raises and records nothing."""

from __future__ import annotations

import time

import pytest
from audit_support import EVERY, Installation, query_event

from gateway.audit import AuditLog, CheckpointPolicy
from gateway.errors import AuditError, AuditIntegrityError
from gateway.policy.signing import load_private_key
from gateway.store import open_store


def head(i: Installation) -> tuple[int, str]:
    seq, hash_ = i.sql().execute("SELECT seq, hash FROM audit_head").fetchone()
    return int(seq), str(hash_)


def test_unwritable_checkpoint_file_fails_the_append(install: Installation) -> None:
    install.fill(EVERY)
    before = head(install)
    install.checkpoints.parent.mkdir(parents=True, exist_ok=True)
    install.checkpoints.mkdir()  # a directory where the file should be
    with pytest.raises(AuditError):
        install.log.append(query_event(0))
    assert head(install) == before
    assert install.sql().execute("SELECT count(*) FROM audit_events").fetchone() == (EVERY,)


def test_database_failure_fails_the_append(install: Installation) -> None:
    install.fill(2)
    install.sql().execute("DROP TABLE audit_head")
    with pytest.raises(AuditError):
        install.log.append(query_event(0))
    assert install.sql().execute("SELECT count(*) FROM audit_events").fetchone() == (2,)


def test_appending_stops_when_the_database_lost_sealed_events(install: Installation) -> None:
    install.fill(EVERY + 3)
    con = install.sql()
    con.execute("DELETE FROM audit_events WHERE seq > 5")
    con.execute("UPDATE audit_head SET seq = 5, hash = (SELECT hash FROM audit_events "
                "WHERE seq = 5)")
    with pytest.raises(AuditIntegrityError, match="lost its tail"):
        install.log.append(query_event(0))


def test_refuses_to_sign_a_corrupted_segment(install: Installation) -> None:
    install.fill(EVERY - 1)
    install.sql().execute("UPDATE audit_events SET actor_user = 'x' WHERE seq = 3")
    install.log.append(query_event(0))  # the 10th event: nothing due yet
    with pytest.raises(AuditIntegrityError, match="event 3 does not verify"):
        install.log.append(query_event(0))
    assert not install.checkpoints.exists()


def test_missing_checkpoint_file_with_a_long_log_is_refused(install: Installation) -> None:
    install.fill(3 * EVERY)
    install.checkpoints.unlink()
    with pytest.raises(AuditIntegrityError, match="no checkpoint"):
        install.log.append(query_event(0))


def test_time_policy_seals_a_quiet_log(install: Installation) -> None:
    log = AuditLog(open_store(install.settings.db_url, migrate=False), install.checkpoints,
                   load_private_key(install.settings.platform_key_path),
                   CheckpointPolicy(every_events=1000, every_s=0.05))
    log.append(query_event(0))
    time.sleep(0.06)
    log.append(query_event(1))  # due by time: seals event 1 first
    assert install.verify().sealed_through == 1
    time.sleep(0.06)
    assert log.checkpoint_if_due() is not None  # and a periodic call seals event 2
    assert install.verify().sealed_through == 2
    log.close()
