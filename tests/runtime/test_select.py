"""Choosing a backend at start-up: a clear error that says what to install."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import RuntimeUnavailable
from sandbox.runtime import select
from sandbox.runtime.settings import RuntimeSettings

NO_ENGINE = "unix:///nonexistent/docker.sock"


def test_no_docker_engine_names_what_to_install() -> None:
    settings = RuntimeSettings(runtime="docker", docker_host=NO_ENGINE)
    with pytest.raises(RuntimeUnavailable) as caught:
        select.select_backend(settings)
    assert caught.value.code == "runtime_unavailable"
    assert "docker.io" in caught.value.message and "scripts/ensure-docker" in caught.value.message


def test_neither_docker_nor_bubblewrap(monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox.runtime import process

    monkeypatch.setattr(process, "bwrap_path", lambda: None)
    settings = RuntimeSettings(runtime="auto", docker_host=NO_ENGINE)
    with pytest.raises(RuntimeUnavailable) as caught:
        select.select_backend(settings)
    message = caught.value.message
    assert "apt-get install docker.io" in message
    assert "apt-get install bubblewrap" in message
    assert "images/build sql" in message


@pytest.mark.docker
def test_missing_image_names_the_build_script() -> None:
    settings = RuntimeSettings(runtime="docker", image="dsb-sql:no-such-version")
    with pytest.raises(RuntimeUnavailable, match="images/build sql"):
        select.select_backend(settings)


@pytest.mark.bwrap
def test_auto_falls_back_to_bubblewrap_without_docker() -> None:
    from sandbox.runtime.process import ProcessBackend

    settings = RuntimeSettings(runtime="auto", docker_host=NO_ENGINE)
    assert isinstance(select.select_backend(settings), ProcessBackend)


def test_run_dir_must_be_short() -> None:
    with pytest.raises(ValueError, match="108 bytes"):
        RuntimeSettings(run_dir=Path("/tmp/" + "x" * 90))


def test_public_api_is_pinned() -> None:
    import sandbox.runtime

    assert sorted(sandbox.runtime.__all__) == [
        "Backend", "Progress", "RuntimeSettings", "Sandbox", "SandboxLimits", "SandboxRecord",
        "SandboxRuntime", "SandboxSpec", "StatementResult", "WarmPool", "select_backend",
        "select_runtime",
    ]
