"""The REST API (``orderhub api``): FastAPI over the read model (reads) and the client API (writes).

1. Every endpoint but login needs credentials (``hub.api.auth``); a user's roles decide what they
   may do: a write is a proposal by ``HUB:<role>`` that ownership.yaml and workflow.yaml judge like
   any connector's, so the API adds no rules of its own to the engine's.
2. A write is answered with the engine's decision: 200 (created, applied, merged, resolved,
   unchanged, duplicate), 202 (parked for a person, or no answer yet: ``Location`` says where to
   ask again), 422 (rejected, with every field error). A creation is checked against the rules
   before anything is sent (the same ``decide``, on an empty order), so a missing field is named
   at once; the engine checks it again.
3. An order is shown without the fields ownership.yaml's ``hidden:`` keeps from the caller's
   roles (null, and named in ``hidden_fields``).
4. Errors are RFC 9457 problem details (``application/problem+json``); bad input is a precise 4xx.
5. The OpenAPI description is published at ``/api/openapi.json`` (docs at ``/api/docs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, replace
from urllib.parse import quote
from typing import Any, AsyncIterator, Literal

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.api import auth
from hub.api.auth import Caller, Forbidden, LoginLimiter, Tokens, TooManyAttempts, Unauthorized
from hub.api.live import Live
from hub.api.records import Acks, Resolutions
from hub.api.users import Users
from hub.api.web import add_web
from hub.observability import metrics
from hub.domain.fields import canonical_json, field_values, rule_path
from hub.errors import BrokerUnavailable, InvalidInput
from hub.events import (Actor, ChangeProposal, FieldChange, FieldError, LifecycleStatus, OrderAlert, OrderRef,
                        OrderSnapshot, ProposalIntent, ProposalOutcome)
from hub.readmodel import AmbiguousOrder, OrderNotFound, OrderSummary, ReadModel
from hub.settings import Settings

API = "/api/v1"
PROBLEM = "application/problem+json"
#: How many CONFIRMED orders the approvals inbox looks at (the most recently changed first).
APPROVALS_LIMIT = 500
#: After Kafka did not answer, writes are answered 503 at once for this long (not each after a wait).
KAFKA_RETRY_S = 5.0
#: How often an open order page's event stream looks for a new version.
SSE_POLL_S = 0.25
#: What the API logs once it serves (tests wait for it).
READY = "orderhub api: serving"

log = logging.getLogger(__name__)


# --- request and response bodies --------------------------------------------------------------


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds the token is valid.")


class Me(BaseModel):
    username: str
    roles: list[str]
    csrf_token: str | None = Field(None, description="For a session: send it in X-CSRF-Token with every change.")


class OrderView(OrderSnapshot):
    """An order as the caller may see it."""

    hidden_fields: list[str] = Field(default_factory=list, description="Fields left out for the caller's roles.")
    approvals_waiting: list[str] = Field(default_factory=list, description="Approval levels waiting for one of "
                                         "the caller's roles.")


class OrderPage(BaseModel):
    items: list[OrderSummary] = Field(description="Each order's summary; amount_net is null when hidden from "
                                      "the caller's roles.")
    page: int
    page_size: int
    more: bool = Field(description="Whether another page follows.")


class Diff(BaseModel):
    field: str
    before: str | None
    after: str | None


class HistoryItem(BaseModel):
    version: int
    outcome: str
    source_system: str
    actor_id: str
    actor_role: str
    occurred_at: dt.datetime
    accepted_at: dt.datetime
    event_id: str
    diffs: list[Diff]


class ConflictItem(BaseModel):
    record_id: str
    order_id: str
    order_number: str | None
    event_id: str
    base_version: int
    current_version: int
    parked: bool
    decided_at: dt.datetime
    fields: list[dict[str, Any]]


class Decision(BaseModel):
    """The engine's decision on one write."""

    event_id: str
    outcome: str = Field(description="CREATED, APPLIED, MERGED, RESOLVED, UNCHANGED, DUPLICATE, PARKED, KEPT, "
                         "REJECTED, or PENDING while no answer has come.")
    order_id: str | None = None
    version: int | None = None
    message: str | None = None
    errors: list[FieldError] = Field(default_factory=list)


class NewOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")
    values: dict[str, Any] = Field(description="Field path -> value, e.g. {\"customer.id\": \"C-1\", "
                                   "\"lines.10.quantity\": 5}.", min_length=1, max_length=500)
    role: str | None = Field(None, description="The role to write as (one of the caller's); default: sales.")
    event_id: str | None = Field(None, max_length=128, description="Your id for this write: resending it is safe.")
    comment: str | None = Field(None, max_length=2000)


class OrderChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_version: int = Field(ge=1, description="The version you saw.")
    changes: dict[str, Any] = Field(min_length=1, max_length=500, description="Field path -> new value (null clears).")
    role: str | None = Field(None, description="The role to write as (one of the caller's).")
    event_id: str | None = Field(None, max_length=128)
    comment: str | None = Field(None, max_length=2000)


class ApprovalDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["approved", "refused"]
    comment: str | None = Field(None, max_length=2000)
    base_version: int = Field(ge=1)
    event_id: str | None = Field(None, max_length=128)


class Resolution(BaseModel):
    model_config = ConfigDict(extra="forbid")
    choice: Literal["current", "proposed", "value"] = Field(
        description="current: keep what the order has; proposed: take the parked proposal's values; "
        "value: the values given here.")
    values: dict[str, Any] | None = Field(None, description="For choice=value: field path -> value.")
    comment: str = Field(min_length=1, max_length=2000)
    role: str | None = None
    event_id: str | None = Field(None, max_length=128)


class OfflineEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: str = Field(min_length=8, max_length=128, description="The client's id: an upload retried is "
                          "applied once.")
    order: str = Field(min_length=1, max_length=256, description="Order id, number or reference.")
    base_version: int = Field(ge=1)
    changes: dict[str, Any] = Field(min_length=1, max_length=500)
    occurred_at: dt.datetime | None = Field(None, description="When the edit was made on the device.")
    role: str | None = None
    comment: str | None = Field(None, max_length=2000)


class OfflineBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    edits: list[OfflineEdit] = Field(min_length=1, max_length=200)


class OfflineResults(BaseModel):
    results: list[Decision]


@dataclass(frozen=True)
class ApprovalItem(OrderSummary):
    levels: tuple[str, ...] = ()
    """The approval levels waiting for one of the caller's roles."""


class AlertView(OrderAlert):
    acknowledged_by: str | None = Field(None, description="Who acknowledged the alert first (it stays open).")
    acknowledged_at: dt.datetime | None = None
    ack_comment: str | None = None


class Acknowledgement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str | None = Field(None, max_length=2000)


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] = Field(default_factory=list)


_PROBLEM_CONTENT = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
#: The problems every endpoint may answer (RFC 9457 documents, described as such in the OpenAPI).
PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": _PROBLEM_CONTENT} for status in (400, 401, 403, 404, 409, 422, 429)}
#: A write's answers besides 200: 202 (parked, or no answer yet), 503 (Kafka away).
WRITES: dict[int | str, dict[str, Any]] = {
    **PROBLEMS, 202: {"model": Decision, "description": "Parked for a person, or PENDING: ask the Location again."},
    503: {"model": Problem, "content": _PROBLEM_CONTENT, "description": "The hub's Kafka is not reachable."}}


# --- the application ----------------------------------------------------------------------------


class Hub:
    """What the endpoints share: the read model, the users, the tokens, and the client (started at the
    first write, so reads work while Kafka is away)."""

    def __init__(self, settings: Settings, users: Users, tokens: Tokens) -> None:
        from hub.client import HubClient

        self.settings, self.users, self.tokens = settings, users, tokens
        self.rules = settings.rules()
        self.model = ReadModel(settings.read_model_url)
        self.model.create_schema()
        self.limiter = LoginLimiter()
        self.acks = Acks(users.engine)
        self.live = Live(settings)
        self.resolutions = Resolutions(users.engine)
        self._client = HubClient(settings, details=True)
        self._started = False
        self._failed_at = float("-inf")
        self._lock = asyncio.Lock()

    async def client(self) -> Any:
        """The client, started at the first write; while Kafka was just found away, 503 at once."""
        async with self._lock:
            if not self._started:
                now = asyncio.get_running_loop().time()
                if now - self._failed_at < KAFKA_RETRY_S:
                    raise BrokerUnavailable(f"Kafka at {self.settings.bootstrap_servers} did not answer a moment ago")
                try:
                    await self._client.start(timeout_s=15)
                except BrokerUnavailable:
                    self._failed_at = asyncio.get_running_loop().time()
                    raise
                self._started = True
        return self._client

    async def close(self) -> None:
        if self._started:
            await self._client.stop()
        self.model.close()
        self.users.close()


def serve(settings: Settings) -> None:
    """Run the API until interrupted; ``READY`` is logged once its socket listens (uvicorn binds it only
    after the app's start-up)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                log.info("%s on http://%s:%d (OpenAPI at /api/openapi.json)", READY, settings.api_host,
                         settings.api_port)

    metrics.serve(settings, "api")
    Server(uvicorn.Config(create_app(settings), host=settings.api_host, port=settings.api_port,
                          log_level="warning", log_config=None,  # uvicorn's lines through hub.logs' handler
                          proxy_headers=False)).run()


def create_app(settings: Settings) -> FastAPI:
    """The API for the hub these settings name."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        users = Users(settings.read_model_url)
        key = auth.secret_of(settings.api_secret.get_secret_value() if settings.api_secret else None,
                             settings.state_dir)
        app.state.hub = Hub(settings, users, Tokens(key, settings.api_token_ttl_s,
                                                    session_ttl_s=settings.api_session_ttl_s))
        following = asyncio.create_task(app.state.hub.live.run(), name="live order updates")
        try:
            yield
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
            await app.state.hub.close()

    app = FastAPI(title="orderhub", version="1", lifespan=lifespan, openapi_url="/api/openapi.json",
                  docs_url="/api/docs", redoc_url=None,
                  description="Orders from CRM, ERP and MES in one place: read them, change them as a person "
                  "(each change answered with the hub's decision), approve, resolve conflicts, upload offline "
                  "edits. Errors are RFC 9457 problem details.")
    _problems(app)
    _routes(app, settings)
    add_web(app, settings.public_url)  # after the API's routes: /o/{ref:path} takes what nothing else does
    app.add_middleware(Measured)
    return app


class Measured:
    """ASGI middleware: every HTTP request counted by its route template (``/api/v1/orders/{ref:path}``,
    never the order it named), method and status, and timed."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def sent(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, sent)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in metrics.HTTP_METHODS else "other"
            metrics.API_REQUESTS.labels(route, method, str(status[0])).inc()
            metrics.API_DURATION.labels(route).observe(time.perf_counter() - started)


def hub_of(request: Request) -> Hub:
    return request.app.state.hub


def caller(request: Request) -> Caller:
    """Rule 1 (``hub.api.auth``): the authenticated caller, or 401/403."""
    hub = hub_of(request)
    return auth.authenticate(hub.users, hub.tokens, method=request.method,
                             authorization=request.headers.get("authorization"),
                             session=request.cookies.get(auth.SESSION_COOKIE),
                             csrf_header=request.headers.get(auth.CSRF_HEADER))


def _routes(app: FastAPI, settings: Settings) -> None:  # noqa: C901 - one place lists every endpoint

    # --- logging in ---------------------------------------------------------------------------

    @app.post(f"{API}/auth/token", response_model=Token, responses=PROBLEMS, tags=["auth"])
    def token(body: Login, request: Request) -> Token:
        """A bearer token for a program (``Authorization: Bearer <token>``)."""
        hub = hub_of(request)
        user = _login(hub, body, request)
        issued, _ = hub.tokens.issue(user, "bearer")
        return Token(access_token=issued, expires_in=int(hub.tokens.ttl_s))

    @app.post(f"{API}/auth/session", response_model=Me, responses=PROBLEMS, tags=["auth"])
    def session(body: Login, request: Request, response: Response) -> Me:
        """Log a browser in: the session cookie (HttpOnly) and the CSRF token (cookie and body)."""
        hub = hub_of(request)
        user = _login(hub, body, request)
        issued, csrf = hub.tokens.issue(user, "session")
        # Secure when the browser comes over TLS (directly, or to the public address a proxy serves)
        secure = request.url.scheme == "https" or (settings.public_url or "").startswith("https://")
        age = int(hub.tokens.session_ttl_s)
        response.set_cookie(auth.SESSION_COOKIE, issued, max_age=age, httponly=True, samesite="strict", secure=secure,
                            path="/")
        response.set_cookie(auth.CSRF_COOKIE, csrf or "", max_age=age, httponly=False, samesite="strict",
                            secure=secure, path="/")
        return Me(username=user.username, roles=list(user.roles), csrf_token=csrf)

    @app.delete(f"{API}/auth/session", status_code=204, tags=["auth"])
    def logout(response: Response) -> Response:
        """Log the browser out (the cookies are removed)."""
        response = Response(status_code=204)
        response.delete_cookie(auth.SESSION_COOKIE, path="/")
        response.delete_cookie(auth.CSRF_COOKIE, path="/")
        return response

    @app.get(f"{API}/me", response_model=Me, responses=PROBLEMS, tags=["auth"])
    def me(who: Caller = Depends(caller)) -> Me:
        """Who the credentials are, and their roles."""
        return Me(username=who.user.username, roles=list(who.roles), csrf_token=who.csrf)

    # --- reading ------------------------------------------------------------------------------

    @app.get(f"{API}/orders", response_model=OrderPage, responses=PROBLEMS, tags=["orders"])
    def list_orders(request: Request, who: Caller = Depends(caller),
                    status: LifecycleStatus | None = None, customer: str | None = Query(None, max_length=64),
                    due_from: dt.date | None = None, due_to: dt.date | None = Query(None, description="Inclusive."),
                    alerted: bool | None = Query(None, description="With an open due-date alert."),
                    overdue: bool = Query(False, description="Open, and due before today."),
                    q: str | None = Query(None, max_length=100, description="Part of the number, customer or a "
                                          "reference."),
                    page: int = Query(1, ge=1, le=100000), page_size: int = Query(25, ge=1, le=200)) -> OrderPage:
        """Orders, most recently changed first, filtered and paged."""
        hub = hub_of(request)
        found = hub.model.list_orders(
            status=status, customer_id=customer, due_from=due_from,
            due_before=due_to + dt.timedelta(days=1) if due_to else None, alerted=alerted,
            overdue_on=dt.datetime.now(dt.timezone.utc).date() if overdue else None, text=q,
            limit=page_size + 1, offset=(page - 1) * page_size)
        hidden = hub.rules.hidden_from(who.roles)
        items = [_item(summary, hidden) for summary in found[:page_size]]
        return OrderPage(items=items, page=page, page_size=page_size, more=len(found) > page_size)

    @app.get(f"{API}/orders/{{ref:path}}/history", response_model=list[HistoryItem], responses=PROBLEMS,
             tags=["orders"])
    def history(ref: str, request: Request, who: Caller = Depends(caller)) -> list[HistoryItem]:
        """Every accepted change of the order: who, when, from which system, each field's before and after."""
        hub = hub_of(request)
        entries = hub.model.history(ref)
        hidden = hub.rules.hidden_from(who.roles)
        return [HistoryItem(version=e.version, outcome=e.outcome.value, source_system=e.source_system,
                            actor_id=e.actor_id, actor_role=e.actor_role, occurred_at=e.occurred_at,
                            accepted_at=e.accepted_at, event_id=e.event_id,
                            diffs=[Diff(field=d.field, before=d.before, after=d.after) for d in e.diffs
                                   if rule_path(d.field) not in hidden]) for e in entries]

    @app.get(f"{API}/orders/{{ref:path}}/conflicts", response_model=list[ConflictItem], responses=PROBLEMS,
             tags=["conflicts"])
    def order_conflicts(ref: str, request: Request, who: Caller = Depends(caller)) -> list[ConflictItem]:
        """The order's recorded conflicts, parked or decided."""
        hub = hub_of(request)
        return [_conflict(c, hub.rules.hidden_from(who.roles)) for c in hub.model.conflicts(hub.model.resolve(ref))]

    @app.get(f"{API}/orders/{{ref:path}}/alerts", response_model=list[OrderAlert], responses=PROBLEMS,
             tags=["alerts"])
    def order_alerts(ref: str, request: Request, who: Caller = Depends(caller)) -> list[OrderAlert]:
        """The order's due-date alerts, raised and cleared."""
        hub = hub_of(request)
        return hub.model.alerts(hub.model.resolve(ref))

    @app.get(f"{API}/orders/{{ref:path}}/events", responses=PROBLEMS, tags=["orders"],
             response_class=StreamingResponse)
    async def order_events(ref: str, request: Request, who: Caller = Depends(caller)) -> StreamingResponse:
        """Server-sent events: ``version`` whenever the order has a newer version (the first at once), with
        ``{"version": n, "order": ...}``: the order as the caller may see it, straight from the engine's
        state topic (``hub.api.live``), or only the version, from the read model, while that is all there
        is. A comment line every 15 s keeps the connection open."""
        hub = hub_of(request)
        order_id = hub.model.resolve(ref)
        hidden = hub.rules.hidden_from(who.roles)

        async def stream() -> AsyncIterator[bytes]:
            seen: int | None = None
            quiet = 0.0
            while not await request.is_disconnected():
                snapshot = await hub.live.newer(order_id, seen, timeout_s=SSE_POLL_S)
                version = snapshot.version if snapshot else await asyncio.to_thread(hub.model.version_of, order_id)
                if version is not None and (seen is None or version > seen):
                    seen, quiet = version, 0.0
                    data: dict[str, Any] = {"version": version}
                    if snapshot is not None:
                        view = _visible(snapshot, hidden).model_copy(
                            update={"approvals_waiting": _levels_for(hub, snapshot, who)})
                        data["order"] = view.model_dump(mode="json")
                    yield f"event: version\ndata: {json.dumps(data)}\n\n".encode()
                else:
                    quiet += SSE_POLL_S
                    if quiet >= 15:
                        quiet = 0.0
                        yield b": still here\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get(f"{API}/orders/{{ref:path}}", response_model=OrderView, responses=PROBLEMS, tags=["orders"])
    def one_order(ref: str, request: Request, who: Caller = Depends(caller)) -> OrderView:
        """One order by hub id, order number, or any outside reference (``SYSTEM/Type/id`` or its id)."""
        hub = hub_of(request)
        order = hub.model.order(ref)
        view = _visible(order, hub.rules.hidden_from(who.roles))
        return view.model_copy(update={"approvals_waiting": _levels_for(hub, order, who)})

    @app.get(f"{API}/conflicts", response_model=list[ConflictItem], responses=PROBLEMS, tags=["conflicts"])
    def parked(request: Request, who: Caller = Depends(caller),
               limit: int = Query(100, ge=1, le=500)) -> list[ConflictItem]:
        """Conflicts waiting for a person (parked, and not resolved through the API yet), the oldest first."""
        hub = hub_of(request)
        resolved = hub.resolutions.resolved()
        hidden = hub.rules.hidden_from(who.roles)
        return [_conflict(c, hidden) for c in hub.model.parked_conflicts(limit=limit + len(resolved))
                if c.record_id not in resolved][:limit]

    @app.get(f"{API}/approvals", response_model=list[ApprovalItem], responses=PROBLEMS, tags=["approvals"])
    def approvals_waiting(request: Request, who: Caller = Depends(caller)) -> list[ApprovalItem]:
        """CONFIRMED orders waiting for an approval level one of the caller's roles gives, with those levels
        (among the most recently changed CONFIRMED orders, up to 500)."""
        hub = hub_of(request)
        approvals = hub.rules.workflow.approvals if hub.rules.workflow else None
        if approvals is None:
            return []
        hidden = hub.rules.hidden_from(who.roles)
        found = []
        for summary in hub.model.list_orders(status=LifecycleStatus.CONFIRMED, limit=APPROVALS_LIMIT):
            levels = _levels_for(hub, hub.model.order(summary.order_id), who)
            if levels:
                found.append(ApprovalItem(**_item(summary, hidden).__dict__, levels=tuple(levels)))
        return found

    @app.get(f"{API}/alerts", response_model=list[AlertView], responses=PROBLEMS, tags=["alerts"])
    def open_alerts(request: Request, who: Caller = Depends(caller),
                    limit: int = Query(100, ge=1, le=500)) -> list[AlertView]:
        """Every open due-date alert, the newest first, with who acknowledged it."""
        hub = hub_of(request)
        return _with_acks(hub, hub.model.every_open_alert(limit=limit))

    @app.post(f"{API}/alerts/{{record_id}}/ack", response_model=AlertView, responses=PROBLEMS, tags=["alerts"])
    def acknowledge(record_id: str, body: Acknowledgement, request: Request,
                    who: Caller = Depends(caller)) -> AlertView:
        """Say you have seen an alert and are on it (it stays open until production starts); the first
        acknowledgement stands."""
        hub = hub_of(request)
        alert = hub.model.alert(record_id)
        hub.acks.add(record_id, who.user.username, body.comment, dt.datetime.now(dt.timezone.utc))
        return _with_acks(hub, [alert])[0]

    @app.get(f"{API}/proposals/{{event_id}}", response_model=Decision, responses=WRITES, tags=["orders"])
    async def proposal_answer(event_id: str, request: Request, response: Response,
                              who: Caller = Depends(caller)) -> Decision:
        """The decision on a write answered 202 before: still PENDING (202), or the engine's decision."""
        return await _answer(hub_of(request), event_id, None, response, wait_s=0.5)

    # --- writing ------------------------------------------------------------------------------

    @app.post(f"{API}/orders", response_model=Decision, responses=WRITES, tags=["orders"], status_code=200)
    async def create(body: NewOrder, request: Request, response: Response, who: Caller = Depends(caller)) -> Decision:
        """A new order (as ``HUB:sales`` unless ``role`` says otherwise). Mandatory fields and permissions are
        checked before anything is sent; the engine checks them again."""
        hub = hub_of(request)
        role = _role(who, body.role, default="sales")
        # the same user's creation sent again with its event id names the same order: made once
        seed = f"{who.user.username}\x1f{body.event_id}" if body.event_id else uuid.uuid4().hex
        order_id = f"hub-{hashlib.sha256(seed.encode()).hexdigest()[:16]}"
        proposal = _proposal(who, role, order_id, body.values, base=0, event_id=body.event_id,
                             comment=body.comment, intent=ProposalIntent.CREATE)
        _precheck_creation(hub, proposal)
        return await _decide(hub, proposal, response)

    @app.patch(f"{API}/orders/{{ref:path}}", response_model=Decision, responses=WRITES, tags=["orders"])
    async def change(ref: str, body: OrderChanges, request: Request, response: Response,
                     who: Caller = Depends(caller)) -> Decision:
        """Change fields of an order from the version you saw (a stale one merges or conflicts like any
        writer's)."""
        hub = hub_of(request)
        role = _role(who, body.role)
        proposal = _proposal(who, role, hub.model.resolve(ref), body.changes, base=body.base_version,
                             event_id=body.event_id, comment=body.comment)
        return await _decide(hub, proposal, response)

    @app.post(f"{API}/orders/{{ref:path}}/approvals/{{level}}", response_model=Decision, responses=WRITES,
              tags=["approvals"])
    async def approve(ref: str, level: str, body: ApprovalDecision, request: Request, response: Response,
                      who: Caller = Depends(caller)) -> Decision:
        """Approve or refuse one approval level (as the level's role, which the caller must hold)."""
        hub = hub_of(request)
        approvals = hub.rules.workflow.approvals if hub.rules.workflow else None
        found = approvals.level(level) if approvals else None
        if found is None:
            raise InvalidInput(f"no approval level {level!r} in workflow.yaml")
        if found.role not in who.roles:
            raise Forbidden(f"approving level {level!r} needs the role {found.role}")
        proposal = _proposal(who, found.role, hub.model.resolve(ref),
                             {found.path: {"decision": body.decision, "comment": body.comment}},
                             base=body.base_version, event_id=body.event_id, comment=body.comment)
        return await _decide(hub, proposal, response)

    @app.post(f"{API}/conflicts/{{record_id}}/resolve", response_model=Decision, responses=WRITES,
              tags=["conflicts"])
    async def resolve(record_id: str, body: Resolution, request: Request, response: Response,
                      who: Caller = Depends(caller)) -> Decision:
        """Resolve a parked conflict, saying why: keep what the order holds now, take the parked proposal's
        values, or give new ones. Written from the version the conflict was decided at, so a change made
        since is not overwritten unseen (it conflicts again). The first resolution stands: 409 after it."""
        from hub.domain.fields import load_json

        hub = hub_of(request)
        conflict = hub.model.conflict(record_id)
        if not conflict.parked:
            raise Conflict(f"conflict {record_id} did not wait for a person")
        order = hub.model.order(conflict.order_id)
        paths = [f.field for f in conflict.fields]
        if body.choice == "current":
            now = field_values(order.model_dump(mode="json"), only=paths)
            values = {path: load_json(now.get(path)) for path in paths}
        elif body.choice == "proposed":
            values = {f.field: _loaded(f.proposed_value) for f in conflict.fields}
        else:
            if not body.values:
                raise InvalidInput("choice 'value' needs the values")
            values = body.values
        role = _role(who, body.role)
        proposal = _proposal(who, role, order.order_id, values, base=conflict.current_version,
                             event_id=body.event_id, comment=f"resolves conflict {record_id}: {body.comment}")
        if not hub.resolutions.claim(record_id, who.user.username, body.choice, proposal.event_id,
                                     dt.datetime.now(dt.timezone.utc)):
            done = hub.resolutions.by(record_id) or {}
            raise Conflict(f"conflict {record_id} was resolved already by {done.get('username')} "
                           f"({done.get('choice')}, {done.get('outcome')})")
        try:
            decision = await _decide(hub, proposal, response)
        except BaseException:
            hub.resolutions.release(record_id)  # refused or not sent: the conflict waits again
            raise
        hub.resolutions.settle(record_id, decision.outcome)
        metrics.CONFLICTS_RESOLVED.labels(body.choice).inc()
        return decision

    @app.post(f"{API}/offline", response_model=OfflineResults, responses=WRITES, tags=["offline"])
    async def offline(body: OfflineBatch, request: Request, who: Caller = Depends(caller)) -> OfflineResults:
        """Edits made without a network, uploaded in the order they were made. Each keeps the client's event id
        and base version: an upload retried is applied once; a stale edit merges or conflicts like any other.
        Each edit has its own answer (one refused stops none of the others); one the hub has not answered
        within the answer timeout is PENDING: upload it again later (it is not applied twice)."""
        hub = hub_of(request)
        results: dict[int, Decision] = {}
        sent: dict[int, ChangeProposal] = {}
        for index, edit in enumerate(body.edits):
            try:
                sent[index] = _proposal(who, _role(who, edit.role), hub.model.resolve(edit.order), edit.changes,
                                        base=edit.base_version, event_id=edit.event_id, comment=edit.comment,
                                        occurred_at=edit.occurred_at)
            except (InvalidInput, OrderNotFound, Forbidden) as exc:
                results[index] = Decision(event_id=edit.event_id, outcome="REJECTED", message=str(exc))
        client = await hub.client()
        for proposal in sent.values():  # all sent first, in order; then every answer under one deadline
            await client.send(proposal)
        deadline = asyncio.get_running_loop().time() + hub.settings.api_answer_timeout_s

        async def answered(index: int, proposal: ChangeProposal) -> None:
            wait = max(0.1, deadline - asyncio.get_running_loop().time())
            try:
                results[index] = await _answer(hub, proposal.event_id, proposal, Response(), wait_s=wait)
            except Refused as exc:
                results[index] = Decision(event_id=proposal.event_id, outcome="REJECTED", message=str(exc),
                                          errors=exc.errors)
        await asyncio.gather(*(answered(index, proposal) for index, proposal in sent.items()))
        return OfflineResults(results=[results[index] for index in range(len(body.edits))])


# --- helpers ------------------------------------------------------------------------------------


def _login(hub: Hub, body: Login, request: Request) -> Any:
    hub.limiter.attempt(body.username, request.client.host if request.client else "unknown")
    user = hub.users.authenticate(body.username, body.password)
    if user is None:
        hub.limiter.failed(body.username)
        raise Unauthorized("wrong user name or password, or the account is disabled")
    return user


def _role(who: Caller, asked: str | None, default: str | None = None) -> str:
    """The role a write is made as: the one asked for (the caller must hold it), else the caller's only
    role, else ``default`` when the caller holds it."""
    if asked is not None:
        if asked not in who.roles:
            raise Forbidden(f"you do not hold the role {asked!r} (yours: {', '.join(who.roles)})")
        return asked
    if len(who.roles) == 1:
        return who.roles[0]
    if default in who.roles:
        return default
    raise InvalidInput(f"you hold several roles ({', '.join(who.roles)}): say which to write as in 'role'")


def _proposal(who: Caller, role: str, order_id: str, values: dict[str, Any], *, base: int, event_id: str | None,
              comment: str | None, intent: ProposalIntent = ProposalIntent.UPDATE,
              occurred_at: dt.datetime | None = None) -> ChangeProposal:
    try:
        changes = [FieldChange(field=path, value=canonical_json(value)) for path, value in values.items()]
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"a value is not JSON: {exc}") from None
    return ChangeProposal(
        event_id=event_id or f"api-{uuid.uuid4()}", order_ref=OrderRef(order_id=order_id), intent=intent,
        base_version=base, source_system="HUB", actor=Actor(id=who.user.username, role=role),
        occurred_at=occurred_at or dt.datetime.now(dt.timezone.utc), changes=changes, comment=comment)


def _precheck_creation(hub: Hub, proposal: ChangeProposal) -> None:
    """Rule 2: the engine's own decision on an empty order, before anything is sent."""
    from hub.domain.decide import DecisionKind, decide

    decision = decide(None, proposal, order_id=proposal.order_ref.order_id or "", rules=hub.rules,
                      at=dt.datetime.now(dt.timezone.utc), next_order_number=lambda: "precheck")
    if decision.kind == DecisionKind.REJECTED and decision.rejection is not None:
        raise Refused(proposal.event_id, decision.rejection.errors)


class Conflict(Exception):
    """409: the request clashes with what happened already (a conflict resolved by someone else)."""


class Refused(Exception):
    """A write the rules refuse (422), with every field error."""

    def __init__(self, event_id: str, errors: list[FieldError], message: str | None = None) -> None:
        super().__init__(message or "; ".join(f"{e.field or 'proposal'}: {e.message}" for e in errors))
        self.event_id, self.errors = event_id, errors


async def _decide(hub: Hub, proposal: ChangeProposal, response: Response) -> Decision:
    """Rule 2: send, and answer with the decision (or 202 PENDING when none came in time)."""
    client = await hub.client()
    await client.send(proposal)
    return await _answer(hub, proposal.event_id, proposal, response, wait_s=hub.settings.api_answer_timeout_s)


async def _answer(hub: Hub, event_id: str, proposal: ChangeProposal | None, response: Response,
                  wait_s: float) -> Decision:
    client = await hub.client()
    try:
        decided = await client.answer(event_id, timeout_s=wait_s)
    except BrokerUnavailable:
        known = await asyncio.to_thread(hub.model.decision_of, event_id)  # decided before this process listened
        if known is not None:
            outcome, order_id, version = known
            if outcome == "REJECTED":
                rejected = [r for r in hub.model.rejections(order_id) if r.event_id == event_id] if order_id else []
                raise Refused(event_id, rejected[0].errors if rejected else [], "refused by the hub's rules")
            if outcome == "PARKED":
                response.status_code = 202
            return Decision(event_id=event_id, outcome=outcome, order_id=order_id, version=version)
        response.status_code = 202
        response.headers["Location"] = f"{API}/proposals/{quote(event_id, safe='')}"  # any id, as a valid header
        return Decision(event_id=event_id, outcome="PENDING",
                        message="the hub has not answered yet; ask again at the Location given")
    answer = decided.answer
    if answer.outcome == ProposalOutcome.REJECTED:
        errors = decided.rejection.errors if decided.rejection else []
        raise Refused(event_id, errors, answer.message)
    if answer.outcome == ProposalOutcome.PARKED:
        response.status_code = 202
    return Decision(event_id=event_id, outcome=answer.outcome.value, order_id=answer.order_id,
                    version=answer.version if answer.version is not None else answer.made_version,
                    message=answer.message)


def _visible(order: OrderSnapshot, hidden: frozenset[str]) -> OrderView:
    """Rule 3: the order without the fields hidden from the caller."""
    data = order.model_dump(mode="json")
    def blank(container: dict[str, Any], keys: list[str]) -> None:
        *parents, last = keys
        for key in parents:
            container = container.get(key) or {}
        if last in container:
            container[last] = None

    for path in hidden:
        if path.startswith("lines.*."):
            for line in data["lines"]:
                blank(line, path.removeprefix("lines.*.").split("."))
        else:
            blank(data, path.split("."))
    return OrderView.model_validate({**data, "hidden_fields": sorted(hidden)})


def _item(summary: OrderSummary, hidden: frozenset[str]) -> OrderSummary:
    """The summary as the caller may see it (no net amount when it is hidden from their roles)."""
    return replace(summary, amount_net=None) if "amounts.net" in hidden else summary


def _with_acks(hub: Hub, alerts: list[OrderAlert]) -> list[AlertView]:
    acks = hub.acks.of([a.record_id for a in alerts])
    return [AlertView(**a.model_dump(), **({"acknowledged_by": ack.username, "acknowledged_at": ack.at,
                                            "ack_comment": ack.comment} if (ack := acks.get(a.record_id)) else {}))
            for a in alerts]


def _conflict(record: Any, hidden: frozenset[str]) -> ConflictItem:
    """A conflict as the caller may see it: the values of fields hidden from their roles are null."""
    fields = []
    for f in record.fields:
        item = f.model_dump(mode="json")
        if rule_path(f.field) in hidden:
            item.update(base_value=None, current_value=None, proposed_value=None, hidden=True)
        fields.append(item)
    return ConflictItem(record_id=record.record_id, order_id=record.order_id, order_number=record.order_number,
                        event_id=record.event_id, base_version=record.base_version,
                        current_version=record.current_version, parked=record.parked, decided_at=record.decided_at,
                        fields=fields)


def _levels_for(hub: Hub, order: OrderSnapshot, who: Caller) -> list[str]:
    """The approval levels the order waits for that one of the caller's roles gives."""
    from hub.domain import notify

    approvals = hub.rules.workflow.approvals if hub.rules.workflow else None
    if approvals is None:
        return []
    values = field_values(order.model_dump(mode="json"))
    return [level.name for level in notify.waiting(approvals, values) if level.role in who.roles]


def _loaded(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# --- problems (RFC 9457) ------------------------------------------------------------------------


def problem(status: int, title: str, detail: str | None = None, errors: list[dict[str, Any]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail, errors=errors or [])
    return JSONResponse(body.model_dump(), status_code=status, media_type=PROBLEM, headers=headers)


#: Exceptions that are a plain problem document: their status and title; the detail is what they say.
PLAIN_PROBLEMS: tuple[tuple[type[Exception], int, str], ...] = (
    (Forbidden, 403, "Forbidden"),
    (Conflict, 409, "Conflict"),
    (AmbiguousOrder, 409, "Ambiguous order reference"),  # an OrderNotFound: the most specific handler answers
    (LookupError, 404, "Not Found"),  # an order, conflict or alert that is not there
    (InvalidInput, 422, "Invalid input"),
)


def _problems(app: FastAPI) -> None:
    def plain(status: int, title: str) -> Any:
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            return problem(status, title, str(exc))
        return handler

    for exception, status, title in PLAIN_PROBLEMS:
        app.add_exception_handler(exception, plain(status, title))

    @app.exception_handler(Unauthorized)
    async def _401(request: Request, exc: Unauthorized) -> JSONResponse:
        return problem(401, "Unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(TooManyAttempts)
    async def _429(request: Request, exc: TooManyAttempts) -> JSONResponse:
        return problem(429, "Too Many Requests", str(exc), headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(OrderNotFound)
    async def _404(request: Request, exc: OrderNotFound) -> JSONResponse:
        return problem(404, "Not Found", f"no order {exc}" if str(exc) else "no such order")

    @app.exception_handler(Refused)
    async def _422_refused(request: Request, exc: Refused) -> JSONResponse:
        return problem(422, "Refused by the hub's rules", str(exc),
                       [{"field": e.field, "rule": e.rule, "message": e.message} for e in exc.errors]
                       + [{"event_id": exc.event_id}])

    @app.exception_handler(RequestValidationError)
    async def _422(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
                  for e in exc.errors()]
        return problem(422, "Invalid request", "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail) if exc.detail else "Error", None,
                       headers=getattr(exc, "headers", None))

    @app.exception_handler(BrokerUnavailable)
    async def _503(request: Request, exc: BrokerUnavailable) -> JSONResponse:
        return problem(503, "Service Unavailable", f"the hub's Kafka is not reachable: {exc}",
                       headers={"Retry-After": "5"})
