"""Settings of the sandbox runtime, read from ``DSB_SANDBOX_*`` environment variables."""

from __future__ import annotations

import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def project_version() -> str:
    try:
        return version("dsb")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.1.0"


def _default_run_dir() -> Path:
    # Short on purpose: a Unix socket path must stay under 108 bytes.
    if os.geteuid() == 0:
        return Path("/run/dsb-sandboxes")
    return Path(tempfile.gettempdir()) / f"dsb-sandboxes-{os.getuid()}"


class RuntimeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DSB_SANDBOX_", extra="ignore")

    runtime: Literal["auto", "docker", "process", "swarm"] = Field(
        default="auto",
        description="Backend: 'docker' where an engine answers, else 'process' (bubblewrap); "
        "'auto' picks the first that works. 'swarm' runs each sandbox as a Docker Swarm "
        "service on this gateway's node (the engine must be a swarm manager).",
    )
    image: str = Field(
        default_factory=lambda: f"dsb-sql:{project_version()}",
        description="SQL sandbox image (built offline by images/build sql).",
    )
    docker_host: str | None = Field(
        default=None, description="Docker engine URL (default: DOCKER_HOST or the local socket)."
    )
    host_paths: Literal["auto", "off"] = Field(
        default="auto",
        description="'auto': when the gateway itself runs in a container of the same engine, "
        "translate the paths it gives the engine to bind (dataset files, socket directories) "
        "through its own mounts to host paths; 'off': use paths as they are.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra labels on every sandbox (JSON object), e.g. the deployment it "
        "belongs to; the dsb.* labels cannot be overridden.",
    )
    run_dir: Path = Field(
        default_factory=_default_run_dir,
        description="Host directory holding one sub-directory per sandbox with the agent's "
        "socket. Created 0711; keep the path short (socket paths are limited to 108 bytes).",
    )
    idle_s: float = Field(
        default=300.0, ge=0, description="How long a released sandbox stays warm (seconds)."
    )
    max_live: int = Field(
        default=16, ge=1, description="Maximum number of live sandboxes; the least recently "
        "used idle one is stopped to make room."
    )
    start_timeout_s: float = Field(
        default=20.0, gt=0, description="Seconds a sandbox may take to report ready."
    )
    grace_ms: int = Field(
        default=2000, ge=100, description="Time the agent gets to stop a statement by itself "
        "(after its timeout or a cancel) before the sandbox is killed."
    )
    agent_memory_mb: int = Field(
        default=192, ge=64, description="Memory added to the scenario's limits.memory_mb for "
        "the agent itself (Python, DuckDB, Arrow buffers of one batch)."
    )
    tmpfs_mb: int = Field(default=16, ge=1, description="Size of the sandbox's writable /tmp.")
    sandbox_uid: int = Field(
        default=10001, ge=1, description="Non-root uid the agent runs as in containers."
    )
    sandbox_gid: int | None = Field(
        default=None, description="Extra group of the agent, for dataset files readable by "
        "that group only (otherwise they must be readable by others; they are encrypted)."
    )
    process_uid_base: int = Field(
        default=61000, ge=1000, description="First of the uids the process backend runs "
        "agents as, one per live sandbox (pids are limited per uid)."
    )
    process_python: Path | None = Field(
        default=None, description="Interpreter for the process backend (default: this one if "
        "every uid can read it, else /usr/bin/python3.X of the same version); the gateway's "
        "duckdb and pyarrow packages are bound next to it."
    )

    @field_validator("run_dir")
    @classmethod
    def _short_run_dir(cls, value: Path) -> Path:
        # <run_dir>/<16 hex>/agent.sock must fit in sun_path (108 bytes with the NUL).
        if len(str(value.absolute())) > 80:
            raise ValueError("run_dir must be at most 80 characters long: the socket path "
                             "under it must fit in 108 bytes")
        return value
