"""An installed demo gateway: real store, audit log, sandbox runtime; HTTP via TestClient."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from gateway.access.accounts import Role, add_user, issue_token
from gateway.app import create_app
from gateway.demo import init_demo, read_tokens
from gateway.policy.models import Agreement, Holder
from gateway.policy.signing import generate_keypair, load_private_key, sign
from gateway.services import Services, build_services
from gateway.settings import Settings


@pytest.fixture(scope="session")
def demo_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("gateway-home"), policy_dir=Path("policies"))
    list(init_demo(settings))
    return settings


@pytest.fixture(scope="session")
def services(demo_settings: Settings) -> Iterator[Services]:
    svc = build_services(demo_settings)
    yield svc
    svc.close()


@pytest.fixture(scope="session")
def tokens(services: Services, demo_settings: Settings) -> dict[str, str]:
    """One token per demo user, plus ``rival`` (an enterprise holding no agreement)."""
    found = read_tokens(demo_settings.home)
    add_user(services.store, "rival", Role.enterprise, organisation="Rival Freight")
    found["rival"] = issue_token(services.store, "rival")
    return found


@pytest.fixture(scope="session")
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=services), raise_server_exceptions=False) as http:
        yield http


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def add_signed_agreement(tree: Path, key_folder: Path, key_id: str, agreement_id: str, *,
                         user: str, role: str, scenario: str) -> None:
    """An agreement in the policy ``tree``, signed by a new key ``key_id`` it trusts."""
    generate_keypair(key_folder / f"{key_id}.key", tree / "keys" / f"{key_id}.pub")
    agreement = sign(Agreement(
        id=agreement_id, holder=Holder(user=user, organisation="t", role=role),  # type: ignore[arg-type]
        scenario=scenario, purpose="test", valid_from=dt.date(2020, 1, 1),
        valid_until=dt.date(2099, 1, 1), security_measures=["test"]),
        load_private_key(key_folder / f"{key_id}.key"), key_id)
    (tree / "agreements" / f"{agreement_id}.yaml").write_text(
        yaml.safe_dump(agreement.model_dump(mode="json", by_alias=True, exclude_none=True)))
