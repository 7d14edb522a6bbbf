"""Who may log in to the hub and start a server: the gateway's own notebook-channel check."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.access.accounts import issue_token
from gateway.services import Services
from sandbox.hub.gatekeeper import Refused, agreement_for_spawn, login


def test_researcher_gets_only_notebook_agreements(services: Services,
                                                   tokens: dict[str, str]) -> None:
    who, usable = login(services, "lin", tokens["lin"])
    assert who.user_id == "lin"
    assert {a.id for a in usable} == {"agr-lin-residents-sandbox", "agr-lin-flights-aggregate"}
    sandbox = next(a for a in usable if a.mode == "sandbox")
    assert sandbox.memory_mb == 2048 and sandbox.cpus == 1.0


@pytest.mark.parametrize(("user", "why"), [
    ("rival", "you hold no agreement"),
    ("wang", "role supervisor does not get notebooks"),
])
def test_users_without_a_notebook_agreement_are_refused(
        services: Services, tokens: dict[str, str], user: str, why: str) -> None:
    with pytest.raises(Refused, match=why):
        login(services, user, tokens[user])


def test_expired_agreements_are_refused(services: Services, tokens: dict[str, str]) -> None:
    later = dt.datetime(2028, 1, 5, tzinfo=dt.UTC)
    with pytest.raises(Refused, match="is expired"):
        login(services, "lin", tokens["lin"], now=later)
    with pytest.raises(Refused, match="expired"):
        agreement_for_spawn(services, "lin", "agr-lin-residents-sandbox", now=later)


def test_api_only_scenario_cannot_start_a_server(services: Services) -> None:
    with pytest.raises(Refused, match="does not allow the notebook channel"):
        agreement_for_spawn(services, "acme-analyst", "agr-acme-flights-records")
    with pytest.raises(Refused, match="not an agreement of yours"):
        agreement_for_spawn(services, "lin", "agr-acme-flights-aggregate")


def test_wrong_name_bad_or_bound_tokens_are_refused(services: Services,
                                                    tokens: dict[str, str]) -> None:
    with pytest.raises(Refused, match="does not belong"):
        login(services, "wang", tokens["lin"])
    with pytest.raises(Refused, match="unknown or expired"):
        login(services, "lin", "dsb_not-a-token")
    bound = issue_token(services.store, "lin", agreement_id="agr-lin-residents-sandbox")
    with pytest.raises(Refused, match="bound to one agreement"):
        login(services, "lin", bound)
