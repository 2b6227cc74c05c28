"""The console's ASGI app: pages (Jinja2, StrictUndefined, autoescaped), the JSON API under
/api, the login form, and the operator actions (POSTs through the CLI's own step code,
journaled as command "web" with who did them).

Every request but /login and /static needs a principal (auth.py). A POST made with the login
cookie must carry the page's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``) and,
when the browser sends one, an Origin of this server; one made with a Bearer token needs
neither (a browser never adds that header on its own). Bad input is a 4xx with one line
naming it; an unexpected failure is a 500 that says only that (the server's log has the rest).
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations, some local to create_app


import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, Form, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from scbundle.core.app import App
from scbundle.core.errors import ScbundleError, StateError
from scbundle.core.secrets import hide_password
from scbundle.core.states import ComponentState
from scbundle.core.text import printable, printable_data
from scbundle.db import journal
from scbundle.ops import tasks as task_switches
from scbundle.steps.status import FAILED, ComponentFilter, status_document
from scbundle.web import views
from scbundle.web.auth import COOKIE, SESSION_S, Keyring, Principal
from scbundle.web.svg import done_svg

log = logging.getLogger("scbundle.web")
MAX_ID = 2**63 - 1
RemoteIdQ = Annotated[int, Field(ge=1, le=MAX_ID)]
Fault = Annotated[int, Field(ge=1, le=6)]
STATES = tuple(s.value for s in ComponentState)
RunId = Annotated[int, Path(ge=1, le=MAX_ID)]
StageId = Annotated[int, Path(ge=0, le=MAX_ID)]
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@+-]+$")]


def _json(data: Any, status: int = 200) -> Response:
    """JSON as `--json` writes it: printable strings, datetimes as str."""
    return Response(json.dumps(printable_data(data), default=str), status_code=status, media_type="application/json")


class RevertIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    remote_id: RemoteIdQ | None = None
    label: Name | None = None
    fault: Fault | None = None


class TaskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: Annotated[str, Field(pattern="^(" + "|".join(task_switches.TASKS) + ")$")]
    enabled: bool


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    remote_id: RemoteIdQ


def _safe_back(back: str | None, default: str = "/") -> str:
    """Only a path of this server (no scheme, no host, no //) is a place to go back to."""
    if not back or not back.startswith("/") or back.startswith("//") or "\\" in back:
        return default
    parts = urlsplit(back)
    return default if parts.scheme or parts.netloc else back


def create_app(app: App, keyring: Keyring) -> FastAPI:
    web = FastAPI(title="scbundle", docs_url=None, redoc_url=None, openapi_url=None)
    env = Environment(loader=PackageLoader("scbundle.web", "templates"), autoescape=select_autoescape(default=True),
                      undefined=StrictUndefined)  # fmt: skip
    env.filters["dur"] = _duration
    web.mount("/static", StaticFiles(packages=[("scbundle.web", "static")]), name="static")

    def page(request: Request, name: str, code: int = 200, **ctx: Any) -> HTMLResponse:
        p: Principal | None = getattr(request.state, "principal", None)
        cookie = request.cookies.get(COOKIE)
        csrf = keyring.csrf_for(cookie) if p is not None and cookie else ""
        html = env.get_template(name).render(principal=p, csrf=csrf, path=request.url.path,
                                             notice=request.query_params.get("done"), **ctx)  # fmt: skip
        return HTMLResponse(html, status_code=code)

    def is_api(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    def refuse(request: Request, status: int, message: str) -> Response:
        message = printable(hide_password(message))
        if is_api(request):
            return _json({"error": message}, status)
        if status == 401:
            return page(request, "login.html", status, error=message, next=_safe_back(request.url.path))
        return page(request, "error.html", status, status=status, message=message)

    @web.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException) -> Response:
        return refuse(request, err.status_code, str(err.detail))

    @web.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> Response:
        parts = []
        for e in err.errors():
            where = ".".join(str(x) for x in e["loc"] if x not in ("body", "query", "path", "form"))
            parts.append(f"{where or 'input'}: {e['msg']}")
        return refuse(request, 422, "bad input: " + "; ".join(parts))

    @web.exception_handler(LookupError)
    async def _missing(request: Request, err: LookupError) -> Response:
        return refuse(request, 404, str(err).strip("'\""))

    @web.exception_handler(ScbundleError)
    async def _refused(request: Request, err: ScbundleError) -> Response:
        gone = isinstance(err, StateError) and str(err).endswith("does not exist")
        return refuse(request, 404 if gone else 409, str(err))

    @web.exception_handler(Exception)
    async def _crash(request: Request, err: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path)
        return refuse(request, 500, f"internal error ({type(err).__name__}); the server's log has the details")

    @web.middleware("http")
    async def _headers(request: Request, call_next: Callable) -> Response:
        resp = await call_next(request)
        resp.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"  # no-referrer would make a browser send "Origin: null" on our own forms
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def reader(request: Request) -> Principal:
        auth = request.headers.get("authorization")
        p: Principal | None = None
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise HTTPException(401, "Authorization must be 'Bearer TOKEN'")
            p = keyring.by_token(token.strip())
            if p is None:
                raise HTTPException(401, "that token is not one of this console's")
            request.state.via = "bearer"
        else:
            cookie = request.cookies.get(COOKIE)
            p = keyring.by_cookie(cookie) if cookie else None
            if p is None:
                raise HTTPException(401, "log in with your token" if not cookie else "your session has ended: log in again")
            request.state.via = "cookie"
        request.state.principal = p
        return p

    async def operator(request: Request, p: Annotated[Principal, Depends(reader)]) -> Principal:
        if not p.may_act:
            raise HTTPException(403, f"{p.name} is a reader: acting needs an operator's token")
        if request.state.via == "cookie":
            origin = request.headers.get("origin")
            if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
                raise HTTPException(403, "a POST from another site's page is refused")
            given = request.headers.get("x-csrf-token")
            if given is None and request.headers.get("content-type", "").startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
                given = (await request.form()).get("csrf")  # type: ignore[assignment]
            if not keyring.csrf_ok(request.cookies.get(COOKIE, ""), given if isinstance(given, str) else None):
                raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page and try again")
        return p

    Reader = Annotated[Principal, Depends(reader)]
    Operator = Annotated[Principal, Depends(operator)]

    def acting(p: Principal):
        return journal.acting("web", f"{p.name}@web")

    # -- login ------------------------------------------------------------------------------
    @web.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> Response:
        return page(request, "login.html", error=None, next=_safe_back(next))

    @web.post("/login")
    def login(request: Request, token: Annotated[str, Form(max_length=512)], next: Annotated[str, Form(max_length=2000)] = "/") -> Response:
        p = keyring.by_token(token.strip())
        if p is None:
            return page(request, "login.html", 401, error="that token is not one of this console's", next=_safe_back(next))
        resp = RedirectResponse(_safe_back(next), status_code=303)
        resp.set_cookie(COOKIE, keyring.cookie_for(p), max_age=SESSION_S, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")  # fmt: skip
        return resp

    @web.post("/logout")
    def logout(p: Reader) -> Response:
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # -- read side --------------------------------------------------------------------------
    @web.get("/api/status")
    def api_status(p: Reader, label: Annotated[Name | None, Query()] = None, remote_id: Annotated[RemoteIdQ | None, Query()] = None,
                   all: bool = False) -> Response:  # fmt: skip
        return _json(status_document(app, label=label, remote_id=remote_id, show_all=all))

    @web.get("/api/overview")
    def api_overview(p: Reader, label: Annotated[Name | None, Query()] = None) -> Response:
        return _json(views.overview(app, label=label))

    @web.get("/", response_class=HTMLResponse)
    def overview_page(request: Request, p: Reader, label: Annotated[Name | None, Query()] = None) -> Response:
        return page(request, "overview.html", data=views.overview(app, label=label), label=label)

    def _filter(state: str | None, fault: int | None, rank: int | None, host: str | None) -> ComponentFilter:
        if state is not None and state not in (*STATES, "failed"):
            raise HTTPException(422, f"bad input: state {state!r} is not one of {', '.join((*STATES, 'failed'))}")
        states = FAILED if state == "failed" else (state,) if state else None
        return ComponentFilter(states=states, fault=fault, rank=rank, host=host)

    Rank = Annotated[int | None, Query(ge=0, le=10**7)]
    FaultQ = Annotated[int | None, Query(ge=0, le=6)]
    Offset = Annotated[int, Query(ge=0, le=10**9)]

    @web.get("/api/runs/{remote_id}")
    def api_run(p: Reader, remote_id: RunId, state: Annotated[str | None, Query(max_length=16)] = None,
                fault: FaultQ = None, rank: Rank = None, host: Annotated[Name | None, Query()] = None, offset: Offset = 0) -> Response:  # fmt: skip
        return _json(views.run_page(app, remote_id, _filter(state, fault, rank, host), offset=offset))

    @web.get("/runs/{remote_id}", response_class=HTMLResponse)
    def run_html(request: Request, p: Reader, remote_id: RunId,
                 state: Annotated[str | None, Query(max_length=16)] = None, fault: Annotated[str, Query(max_length=2)] = "",
                 rank: Annotated[str, Query(max_length=8)] = "", host: Annotated[str, Query(max_length=128)] = "",
                 offset: Offset = 0) -> Response:  # fmt: skip
        # the filter form sends every field, the empty ones as "": each is "any"
        fault_n, rank_n = _opt_int("fault", fault, 0, 6), _opt_int("rank", rank, 0, 10**7)
        if host and not re.fullmatch(r"[A-Za-z0-9_.:@+-]+", host):
            raise HTTPException(422, f"bad input: host {host!r} is not a host name")
        data = views.run_page(app, remote_id, _filter(state or None, fault_n, rank_n, host or None), offset=offset)
        fault, rank = fault_n, rank_n  # type: ignore[assignment]
        return page(request, "run.html", data=data, f={"state": state or "", "fault": fault, "rank": rank, "host": host or ""},
                    offset=offset, states=(*STATES, "failed"))  # fmt: skip

    @web.get("/api/runs/{remote_id}/components/{stage_id}")
    def api_component(p: Reader, remote_id: RunId, stage_id: StageId) -> Response:
        return _json(views.component_page(app, remote_id, stage_id))

    @web.get("/runs/{remote_id}/components/{stage_id}", response_class=HTMLResponse)
    def component_html(request: Request, p: Reader, remote_id: RunId,
                       stage_id: StageId) -> Response:  # fmt: skip
        return page(request, "component.html", data=views.component_page(app, remote_id, stage_id))

    @web.get("/api/faults")
    def api_faults(p: Reader, label: Annotated[Name, Query()], stage: Annotated[Name, Query()], fault: FaultQ = None) -> Response:
        return _json(views.components_with_fault(app, label=label, stage=stage, fault=fault))

    @web.get("/faults", response_class=HTMLResponse)
    def faults_html(request: Request, p: Reader, label: Annotated[Name, Query()], stage: Annotated[Name, Query()], fault: FaultQ = None) -> Response:
        rows = views.components_with_fault(app, label=label, stage=stage, fault=fault)
        return page(request, "faults.html", rows=rows, label=label, stage=stage, fault=fault)

    @web.get("/api/history")
    def api_history(p: Reader, label: Annotated[Name | None, Query()] = None) -> Response:
        return _json(views.history(app, label=label))

    @web.get("/history", response_class=HTMLResponse)
    def history_html(request: Request, p: Reader, label: Annotated[Name | None, Query()] = None) -> Response:
        data = views.history(app, label=label)
        labels = sorted({r["label"] for r in status_document(app)["runs"]})
        return page(request, "history.html", data=data, label=label, labels=labels, svg=done_svg(data["done"]))

    # -- actions ----------------------------------------------------------------------------
    def do_revert(p: Principal, body: RevertIn) -> list[dict]:
        from scbundle.steps.revert import revert

        if body.remote_id is None and body.label is None:
            raise HTTPException(422, "bad input: revert needs a remote_id or a label")
        with acting(p):
            return [asdict(r) for r in revert(app, remote_id=body.remote_id, label=body.label, fault=body.fault)]

    def do_tasks(p: Principal, body: TaskIn) -> list[dict]:
        with acting(p):
            task_switches.set_enabled(app, [body.task], body.enabled)
        return [asdict(t) for t in task_switches.states(app)]

    def do_cancel(p: Principal, body: CancelIn) -> dict:
        from scbundle.steps.cancel import cancel

        with acting(p):
            return asdict(cancel(app, body.remote_id))

    @web.post("/api/revert")
    def api_revert(p: Operator, body: RevertIn) -> Response:
        return _json(do_revert(p, body))

    @web.post("/api/tasks")
    def api_tasks(p: Operator, body: TaskIn) -> Response:
        return _json(do_tasks(p, body))

    @web.post("/api/cancel")
    def api_cancel(p: Operator, body: CancelIn) -> Response:
        return _json(do_cancel(p, body))

    def back_to(back: str, note: str) -> Response:
        target = _safe_back(back)
        sep = "&" if "?" in target else "?"
        return RedirectResponse(f"{target}{sep}done={quote(note[:300])}", status_code=303)

    @web.post("/actions/revert")
    def form_revert(p: Operator, remote_id: Annotated[str, Form(max_length=24)] = "", label: Annotated[str, Form(max_length=128)] = "",
                    fault: Annotated[str, Form(max_length=4)] = "", back: Annotated[str, Form(max_length=2000)] = "/") -> Response:  # fmt: skip
        body = _model(RevertIn, remote_id=remote_id or None, label=label or None, fault=fault or None)
        res = do_revert(p, body)
        note = "; ".join(f"remote_id {r['remote_id']}: {r['from_state']} -> {r['to_state']} ({r['requeued']} requeued)" for r in res)
        return back_to(back, note or "nothing to revert")

    @web.post("/actions/tasks")
    def form_tasks(p: Operator, task: Annotated[str, Form(max_length=16)], enabled: Annotated[str, Form(max_length=3)],
                   back: Annotated[str, Form(max_length=2000)] = "/") -> Response:  # fmt: skip
        if enabled not in ("on", "off"):
            raise HTTPException(422, "bad input: enabled must be on or off")
        body = _model(TaskIn, task=task, enabled=enabled == "on")
        do_tasks(p, body)
        return back_to(back, f"task {task} switched {enabled}")

    @web.post("/actions/cancel")
    def form_cancel(p: Operator, remote_id: Annotated[str, Form(max_length=24)], back: Annotated[str, Form(max_length=2000)] = "/") -> Response:
        res = do_cancel(p, _model(CancelIn, remote_id=remote_id))
        return back_to(back, f"remote_id {res['remote_id']}: cancelled -> {res['state']}")

    return web


def _model(cls: type[BaseModel], **values: Any) -> Any:
    """A form's strings through the API's model: one 422 line naming what is wrong."""
    from pydantic import ValidationError

    try:
        return cls.model_validate(values)
    except ValidationError as err:
        parts = [f"{'.'.join(str(x) for x in e['loc']) or 'input'}: {e['msg']}" for e in err.errors()]
        raise HTTPException(422, "bad input: " + "; ".join(parts)) from None


def _opt_int(name: str, text: str, lo: int, hi: int) -> int | None:
    if not text.strip():
        return None
    if not text.strip().isdigit() or not lo <= int(text) <= hi:
        raise HTTPException(422, f"bad input: {name} {text!r} is not a whole number from {lo} to {hi}")
    return int(text)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(abs(seconds))
    text = f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
    return ("-" if seconds < 0 else "") + text
