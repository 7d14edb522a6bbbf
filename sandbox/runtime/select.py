"""Pick the sandbox backend at gateway start-up, or say exactly what to install."""

from __future__ import annotations

from gateway.errors import RuntimeUnavailable
from sandbox.runtime.base import Backend
from sandbox.runtime.pool import WarmPool
from sandbox.runtime.settings import RuntimeSettings

INSTALL_HINT = (
    "Install Docker (Debian: `apt-get install docker.io`, then start dockerd; "
    "scripts/ensure-docker does both and builds nothing) and build the image with "
    "`images/build sql`, or install bubblewrap (`apt-get install bubblewrap`) for the "
    "process backend."
)


def select_backend(settings: RuntimeSettings) -> Backend:
    """The configured backend; with ``auto``, Docker if an engine answers, else bubblewrap.

    ``swarm`` is only ever chosen explicitly (DSB_SANDBOX_RUNTIME=swarm).
    """
    reasons: list[str] = []
    if settings.runtime == "swarm":
        # Never chosen by 'auto': a cluster engine is a deployment decision.
        from sandbox.runtime.swarm import SwarmBackend

        return SwarmBackend(settings)
    if settings.runtime in ("auto", "docker"):
        try:
            from sandbox.runtime.docker import DockerBackend

            return DockerBackend(settings)
        except RuntimeUnavailable as exc:
            if settings.runtime == "docker":
                raise
            reasons.append(f"docker: {exc.message}")
        except ImportError:
            reasons.append("docker: the Python package `docker` is not installed")
    if settings.runtime in ("auto", "process"):
        try:
            from sandbox.runtime.process import ProcessBackend

            backend = ProcessBackend(settings)
            backend.self_test()
            return backend
        except RuntimeUnavailable as exc:
            if settings.runtime == "process":
                raise
            reasons.append(f"process: {exc.message}")
    raise RuntimeUnavailable(
        "no sandbox runtime is available (" + "; ".join(reasons) + "). " + INSTALL_HINT)


def select_runtime(settings: RuntimeSettings | None = None, *,
                   reap_orphans: bool = True) -> WarmPool:
    """The warm pool over the selected backend; raises RuntimeUnavailable if there is none.

    At gateway start-up it also removes the sandboxes a previous gateway process on this
    host left behind (``reap_orphans``): their agents lost their channel and can serve
    nothing, but their containers would linger.
    """
    settings = settings or RuntimeSettings()
    pool = WarmPool(select_backend(settings), settings)
    if reap_orphans:
        pool.reap_orphans()
    return pool
