"""A real demo gateway (store, policies, audit) for the hub-side checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.access.accounts import Role, add_user, issue_token
from gateway.demo import init_demo, tokens_file
from gateway.services import Services, build_services
from gateway.settings import Settings


@pytest.fixture(scope="module")
def demo_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("gateway-home"), policy_dir=Path("policies"))
    list(init_demo(settings))
    return settings


@pytest.fixture(scope="module")
def services(demo_settings: Settings) -> Iterator[Services]:
    svc = build_services(demo_settings)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def tokens(services: Services, demo_settings: Settings) -> dict[str, str]:
    found = {}
    for line in tokens_file(demo_settings).read_text().splitlines():
        name, _, token = line.partition("=")
        found[name.removeprefix("DSB_TOKEN_").lower().replace("_", "-")] = token
    add_user(services.store, "rival", Role.enterprise, organisation="Rival Freight")
    found["rival"] = issue_token(services.store, "rival")
    return found
