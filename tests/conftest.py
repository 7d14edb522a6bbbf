"""Shared fixtures: an isolated installation (DSB_HOME in a temp dir) with demo policies."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEMO_POLICIES = ROOT / "policies"


@pytest.fixture
def policy_tree(tmp_path: Path) -> Path:
    """A writable copy of the demo policy tree."""
    target = tmp_path / "policies"
    shutil.copytree(DEMO_POLICIES, target)
    return target


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings for a fresh installation under tmp_path, also exported as DSB_* env."""
    monkeypatch.setenv("DSB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DSB_POLICY_DIR", str(DEMO_POLICIES))
    for name in ("DSB_DATABASE_URL", "DSB_MASTER_KEY_FILE", "DSB_DATA_DIR", "DSB_KEYS_DIR",
                 "DSB_TRUSTED_KEYS_DIR", "DSB_CHECKPOINT_FILE"):
        monkeypatch.delenv(name, raising=False)
    yield Settings()
