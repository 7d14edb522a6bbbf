"""Console plumbing: templates, the session dependency, role guards, login and language.

Pages live in ``audit_pages`` and ``workflow_pages``; they call the same workflow
functions as the API routers, so both entry points change state and audit alike.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from gateway.access.accounts import Principal, Role, authenticate
from gateway.console import i18n, session
from gateway.deps import ServicesDep
from gateway.errors import DsbError
from gateway.services import Services

HERE = Path(__file__).parent
# Autoescaping is on for .html templates (Starlette enables it by default).
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)
OVERSIGHT = (Role.supervisor, Role.admin)
OPERATORS = (Role.provider, Role.admin)


class NeedLogin(Exception):
    """No valid session: send the browser to the login page."""


class NotAllowed(Exception):
    """A valid session whose role may not open this page."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx


@dataclass(frozen=True)
class Ctx:
    """What every console view gets: services, caller, language, CSRF secret."""

    request: Request
    svc: Services
    who: Principal
    lang: str
    csrf: str

    def t(self, key: str) -> str:
        return i18n.MESSAGES[self.lang].get(key, key)

    def need(self, *roles: Role) -> None:
        if self.who.role not in roles:
            raise NotAllowed(self)

    def render(self, name: str, **values: Any) -> HTMLResponse:
        return render(self.request, name, lang=self.lang, who=self.who, csrf=self.csrf,
                      **values)


def render(request: Request, name: str, *, lang: str, status_code: int = 200,
           **values: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {
        "t": i18n.translator(lang), "lang": lang, "other_lang": "zh" if lang == "en" else "en",
        "path": request.url.path, "query": request.url.query,
        "done": request.query_params.get("done"), "error": request.query_params.get("error"),
        **values}, status_code=status_code)


def _lang(request: Request) -> str:
    return i18n.language(request.cookies.get(session.LANG_COOKIE))


def console(request: Request, svc: ServicesDep) -> Ctx:
    data = session.read(svc, request.cookies.get(session.COOKIE))
    who = session.principal(svc, data) if data else None
    if data is None or who is None:
        raise NeedLogin
    return Ctx(request, svc, who, _lang(request), data["csrf"])


ConsoleDep = Annotated[Ctx, Depends(console)]


def checked(ctx: Ctx, csrf: str) -> None:
    """Every POST form carries the session's CSRF secret."""
    if not session.csrf_ok(ctx.csrf, csrf):
        raise DsbError(ctx.t("error.csrf"), code="csrf_failed")


def act(ctx: Ctx, back: str, csrf: str, change: Callable[[], object]) -> RedirectResponse:
    """Run a state change from a form; come back to the page saying done or why not."""
    try:
        checked(ctx, csrf)
        change()
    except DsbError as error:
        return RedirectResponse(f"{back}?error={quote(f'{error.code}: {error.message}')}", 303)
    except ValueError as error:  # form fields that fail validation (pydantic, dates)
        return RedirectResponse(f"{back}?error={quote(f'invalid_input: {error}'[:400])}", 303)
    return RedirectResponse(f"{back}?done=1", 303)


@router.get("/login")
def login_form(request: Request) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    response = render(request, "login.html", lang=_lang(request), who=None, csrf=nonce,
                      failed=request.query_params.get("failed"))
    response.set_cookie(session.LOGIN_CSRF_COOKIE, nonce, httponly=True, samesite="strict",
                        path="/console")
    return response


@router.post("/login")
def login(request: Request, svc: ServicesDep, token: Annotated[str, Form()],
          csrf: Annotated[str, Form()]) -> Response:
    if not session.csrf_ok(request.cookies.get(session.LOGIN_CSRF_COOKIE), csrf):
        return RedirectResponse("/console/login?failed=1", 303)
    try:
        who = authenticate(svc.store, token.strip())
    except DsbError:
        svc.record("login_failed", None, details={"channel": "console"})
        return RedirectResponse("/console/login?failed=1", 303)
    svc.record("login", who, details={"channel": "console"})
    home = "/console/audit" if who.role in OVERSIGHT else "/console/datasets"
    response = RedirectResponse(home, 303)
    response.set_cookie(session.COOKIE, session.issue(svc, who), httponly=True,
                        samesite="strict", path="/console", max_age=session.MAX_AGE_S,
                        secure=request.url.scheme == "https")
    response.delete_cookie(session.LOGIN_CSRF_COOKIE, path="/console")
    return response


@router.post("/logout")
def logout(ctx: ConsoleDep, csrf: Annotated[str, Form()]) -> Response:
    checked(ctx, csrf)
    response = RedirectResponse("/console/login", 303)
    response.delete_cookie(session.COOKIE, path="/console")
    return response


@router.get("/lang/{code}")
def switch_language(code: str, request: Request) -> Response:
    # Only a display preference: safe as a GET, and only a local path is followed.
    back = request.query_params.get("next", "/console/")
    if not back.startswith("/console"):
        back = "/console/"
    response = RedirectResponse(back, 303)
    response.set_cookie(session.LANG_COOKIE, i18n.language(code), samesite="strict",
                        path="/console")
    return response


@router.get("/")
def home(ctx: ConsoleDep) -> Response:
    return RedirectResponse("/console/audit" if ctx.who.role in OVERSIGHT
                            else "/console/datasets", 303)


def install(app: FastAPI) -> None:
    """Mount the console on ``app``: pages, static files, the two redirects."""
    from gateway.console import airlock_pages, audit_pages, workflow_pages

    app.include_router(router)
    app.include_router(audit_pages.router)
    app.include_router(workflow_pages.router)
    app.include_router(airlock_pages.router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(NeedLogin)
    async def need_login(request: Request, exc: NeedLogin) -> Response:
        return RedirectResponse("/console/login", 303)

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, exc: NotAllowed) -> Response:
        return exc.ctx.render("forbidden.html", status_code=403)
