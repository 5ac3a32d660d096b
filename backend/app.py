"""The Starlette application: routes, lifespan, middleware."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from backend import clock, db, metrics
from backend.bus import create_bus
from backend import settings as settings_module
from backend.middleware.auth import AuthMiddleware
from backend.middleware.body_limit import BodyLimitMiddleware
from backend.middleware.request_id import RequestIdMiddleware
from backend.models import Role
from backend.schema.api import build_schema
from backend.schema.core.access import build_access_map
from backend.schema.core import live
from backend.schema.core.context import Context
from backend.services import heartbeat
from backend.settings import Settings

log = logging.getLogger("ctops")


class GraphQLView(GraphQL):
    """strawberry's ASGI view with our context: the viewer, request id, loaders."""

    def __init__(self, schema: Any, settings: Settings) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphiql else None,
            allow_queries_via_get=False,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            allowed_origins=settings.cors_origins,
        )
        self.settings = settings
        self.access_map = build_access_map(schema._schema)
        self.live: live.LiveFeed | None = None  # set by the lifespan
        self._encode_message = live.MessageEncoder(super().encode_json)

    def encode_json(self, data: object) -> str:
        return self._encode_message(data)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return await super().__call__(scope, receive, send)
        connection = live.LiveConnection(websocket=None, capacity=self.settings.subscription_queue_size)
        scope.setdefault("state", {})["live_connection"] = connection
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.live is not None:
                self.live.remove_connection(connection)

    async def get_context(self, request: Any, response: Any) -> Context:
        state = request.scope.get("state") or {}
        connection = state.get("live_connection")
        if connection is not None:
            connection.websocket = response
        return Context(
            viewer=state.get("viewer"),
            request_id=state.get("request_id", ""),
            access_map=self.access_map,
            settings=self.settings,
            request=request,
            response=response,
            live=self.live if connection is not None else None,
            connection=connection,
        )

    async def on_ws_connect(self, context: Context) -> None:
        await live.authenticate_connection(context)


def _tune_gc() -> None:
    """Garbage collection for a process that fans events out to many subscribers.

    What start-up built (modules, the schema) lives as long as the process:
    frozen, the collector stops rescanning it at every full collection. Each
    delivery allocates many short-lived objects: the youngest generation is
    collected every 7,000 allocations instead of 700. Measured with
    bench/fanout.py (1,000 subscribers, 5,000 deliveries/s): p99 from ~360 ms to
    ~100 ms, and less CPU per delivery.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 20, 20)


def _body_limit(settings: Settings):
    def limit_for(scope: Any) -> int:
        viewer = (scope.get("state") or {}).get("viewer")
        if viewer is not None and viewer.role is Role.AGENT:
            return settings.agent_max_body_bytes
        return settings.max_body_bytes

    return limit_for


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    checks: dict[str, Any] = {}
    ready = True
    try:
        await db.ping()
        checks["database"] = {"ok": True, "backend": db.dialect()}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        ready = False
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    if settings.redis_url:
        try:
            from redis.asyncio import Redis

            client = Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
            try:
                await client.ping()
            finally:
                await client.aclose()
            checks["redis"] = {"ok": True}
        except Exception as exc:  # noqa: BLE001
            ready = False
            checks["redis"] = {"ok": False, "error": type(exc).__name__}
    component = heartbeat.EMBEDDED if settings.embedded else heartbeat.WORKER
    if checks["database"]["ok"]:
        beat = await heartbeat.state(component, settings.heartbeat_stale_seconds)
        checks["heartbeat"] = {
            "ok": beat.fresh,
            "component": component,
            "lastBeatAt": beat.last_beat_at.isoformat() if beat.last_beat_at else None,
            "ageSeconds": beat.age_seconds,
        }
        ready = ready and beat.fresh
    checks["notifications"] = await _notifications_check(settings, checks["database"]["ok"])
    checks["clock"] = {
        "now": clock.now().isoformat(),
        "shifted": clock.is_shifted(),
        "offsetSeconds": clock.offset().total_seconds(),
    }
    body = {"status": "ready" if ready else "not ready", "mode": "embedded" if settings.embedded else "production", **checks}
    return JSONResponse(body, status_code=200 if ready else 503)


async def _notifications_check(settings: Settings, database_ok: bool) -> dict[str, Any]:
    """Where notifications go (the SMTP URL with its password redacted), whether
    channel secrets can be read, and how many attempts wait. Informational: it
    does not make the process unready."""
    from backend import mail, secret_box
    from backend.services import notify

    check: dict[str, Any] = {"smtp": mail.redacted(settings.smtp_url), "secretKey": secret_box.key_source(settings)}
    if database_ok:
        try:
            check["pendingDeliveries"] = await notify.pending_count()
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            check["pendingDeliveries"] = None
            check["error"] = type(exc).__name__
    return check


def create_app(settings: Settings | None = None, *, manage_database: bool = True, run_jobs: bool | None = None) -> Starlette:
    """Build the app. Tests that own the database pass ``manage_database=False``."""
    settings = settings or settings_module.load()
    from backend.services.checker import validate_settings

    validate_settings(settings)
    from backend import mail, secret_box

    secret_box.validate_settings(settings)
    mail.validate_settings(settings)
    schema = build_schema(settings)
    view = GraphQLView(schema, settings)
    if run_jobs is None:
        run_jobs = settings.embedded

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        if manage_database:
            if settings.embedded and settings.database_is_sqlite:
                await db.migrate(settings.database_url)
            await db.init(settings.database_url)
            from backend import secret_box
            from backend.services import alerts

            await secret_box.check_ready(settings)  # generates the embedded key on first start
            await alerts.ensure_default_rules()
        if clock.is_shifted():
            log.warning("Clock shifted by %s: now reads %s", clock.offset(), clock.now().isoformat())
        bus = create_bus(settings.redis_url)
        await bus.start()
        db.set_publisher(bus.publish)
        view.live = live.LiveFeed(settings)
        view.live.attach(bus)
        await view.live.start()
        from backend.schema.alerts import AlertFeed

        view.live.alerts = AlertFeed()
        view.live.alerts.attach(bus)
        await view.live.alerts.start()
        _tune_gc()
        runner = None
        if run_jobs:
            from backend.jobs.embedded import EmbeddedRunner

            runner = EmbeddedRunner(settings)
            runner.start()
        try:
            yield
        finally:
            if runner is not None:
                await runner.stop()
            await view.live.alerts.stop()
            await view.live.stop()
            db.set_publisher(None)
            await bus.close()
            metrics.mark_process_dead(os.getpid())
            if manage_database:
                await db.close()

    middleware = [Middleware(RequestIdMiddleware)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                expose_headers=["X-Request-ID"],
                max_age=600,
            )
        )
    middleware += [Middleware(AuthMiddleware), Middleware(BodyLimitMiddleware, limit_for=_body_limit(settings))]
    app = Starlette(
        routes=[
            Route("/graphql", view, methods=["GET", "POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics.endpoint),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    from starlette.routing import WebSocketRoute

    app.router.routes.append(WebSocketRoute("/graphql", view))
    app.state.settings = settings
    return app
