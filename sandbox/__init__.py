"""Execution side of the data sandbox: the locked-down engine, runtimes and agent.

In a notebook, ``from sandbox import sql, datasets, export`` gives the client library
(``sandbox.client``); it is loaded on first use so that importing ``sandbox.runtime``
never pulls in pandas or the notebook client.
"""

from __future__ import annotations

from typing import Any

_CLIENT_NAMES = ("sql", "query", "datasets", "export", "SandboxError", "load_ipython_extension")


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from sandbox import client

        return getattr(client, name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
