"""The one place where errors become HTTP responses (RFC 9457 problem+json).

Every response carries a stable ``code``; nothing below this layer chooses a status
code, and no response ever carries a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import (
    AuditError,
    DsbError,
    PolicyError,
    QueryRejected,
    QuotaExceeded,
    StoreUnavailable,
    Unauthenticated,
)
from gateway.store.db import connection_lost

log = logging.getLogger("dsb.gateway")
PROBLEM = "application/problem+json"


def problem(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": f"https://dsb.invalid/problems/{code}", "title": code.replace("_", " "),
            "status": status, "code": code, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def store_unavailable(exc: BaseException) -> StoreUnavailable | None:
    """A lost or refused database connection, wherever it surfaced; else None."""
    if not connection_lost(exc):
        return None
    return StoreUnavailable("the metadata database is unavailable (restarting?); nothing "
                            "was recorded, retry the request")


def _unavailable(exc: StoreUnavailable) -> JSONResponse:
    log.warning("store unavailable: %s", exc.message)
    response = problem(exc.http_status, exc.code, exc.message)
    response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def install(app: FastAPI) -> None:
    @app.exception_handler(DsbError)
    async def _dsb(_request: Request, exc: DsbError) -> JSONResponse:
        lost = store_unavailable(exc) if isinstance(exc, AuditError) else None
        if lost is not None:
            return _unavailable(lost)
        if isinstance(exc, StoreUnavailable):
            return _unavailable(exc)
        extra: dict[str, Any] = {}
        if isinstance(exc, QueryRejected) and exc.position is not None:
            extra["position"] = exc.position
        if isinstance(exc, PolicyError):
            extra["issues"] = [str(i) for i in exc.issues]
        status = exc.http_status
        if status >= 500:
            log.error("server-side error %s: %s", exc.code, exc.message)
        response = problem(status, exc.code, exc.message, **extra)
        if isinstance(exc, QuotaExceeded):
            response.headers["Retry-After"] = str(exc.retry_after_s)
            response.headers["X-Retry-After-Seconds"] = str(exc.retry_after_s)
        if isinstance(exc, Unauthenticated):
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg")}
                  for e in exc.errors()]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        return problem(422, "invalid_request", f"{first['field']}: {first['message']}",
                       errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated"}
        return problem(exc.status_code, codes.get(exc.status_code, "http_error"),
                       str(exc.detail))

    @app.exception_handler(DBAPIError)
    async def _database(_request: Request, exc: DBAPIError) -> JSONResponse:
        lost = store_unavailable(exc)
        if lost is not None:
            return _unavailable(lost)
        log.exception("database error")
        return problem(500, "internal_error", "internal error; it has been logged")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        lost = store_unavailable(exc)
        if lost is not None:
            return _unavailable(lost)
        log.exception("unexpected error")
        return problem(500, "internal_error", "internal error; it has been logged")
