"""Sandbox runtimes: where statements run, isolated from the gateway and from each other.

``select_runtime()`` gives the warm pool over the Docker backend where an engine answers,
else over the bubblewrap process backend, else raises RuntimeUnavailable naming what to
install. See ``base`` for the interface.
"""

from sandbox.runtime.base import (
    Backend,
    Progress,
    SandboxLimits,
    SandboxRecord,
    SandboxRuntime,
    SandboxSpec,
)
from sandbox.runtime.pool import WarmPool
from sandbox.runtime.result import StatementResult
from sandbox.runtime.select import select_backend, select_runtime
from sandbox.runtime.session import Sandbox
from sandbox.runtime.settings import RuntimeSettings

__all__ = [
    "Backend",
    "Progress",
    "RuntimeSettings",
    "Sandbox",
    "SandboxLimits",
    "SandboxRecord",
    "SandboxRuntime",
    "SandboxSpec",
    "StatementResult",
    "WarmPool",
    "select_backend",
    "select_runtime",
]
