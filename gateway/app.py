"""``create_app(settings)``: the gateway's HTTP API, composed from one router per resource."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway import __version__, problems
from gateway.console import web as console
from gateway.routers import (
    agreements,
    catalog,
    datasets_admin,
    governance,
    jobs,
    me,
    metrics,
    oversight,
    privacy,
)
from gateway.routers import airlock as airlock_router
from gateway.services import Services, build_services
from gateway.settings import Settings


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> FastAPI:
    """Build the app; tests pass ``services`` to share one set with their fixtures."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = services is None
        app.state.services = services or build_services(settings or Settings())
        try:
            yield
        finally:
            if own:
                app.state.services.close()

    app = FastAPI(
        title="dsb gateway",
        version=__version__,
        summary="Data sandbox for conditionally-open public data",
        description="Submit SQL under a signed data-use agreement; results come back "
        "rewritten to the agreed scenario, with provenance and an audit receipt. Errors are "
        "`application/problem+json` with a stable `code`.",
        lifespan=lifespan,
    )
    if services is not None:
        app.state.services = services
    problems.install(app)
    for module in (catalog, datasets_admin, agreements, privacy, jobs, oversight, me):
        app.include_router(module.router)
    for module in (governance, metrics):
        app.include_router(module.router)
    console.install(app)
    app.include_router(airlock_router.router)

    @app.get("/healthz", tags=["operations"], summary="Liveness (public)")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
