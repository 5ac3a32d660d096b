"""The ``ctops`` command: thin adapters over services."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

from backend import clock, db
from backend import settings as settings_module
from backend.errors import CtopsError
from backend.settings import Settings


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # tortoise logs every connection open/close at INFO: noise for operators.
    logging.getLogger("tortoise").setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))


async def _with_db(settings: Settings, work: Callable[[], Awaitable[Any]], *, migrate: bool = False) -> Any:
    if migrate:
        await db.migrate(settings.database_url)
    await db.init(settings.database_url)
    # Production mode: what a command records reaches every replica through
    # Redis (sent, and flushed, before the command exits). Embedded mode has
    # no bus between processes: see EMBEDDED_NOTE.
    bus = None
    if settings.redis_url:
        from backend.bus import RedisBus

        bus = RedisBus(settings.redis_url, listen=False)
        await bus.start()
        db.set_publisher(bus.publish)
    try:
        return await work()
    finally:
        if bus is not None:
            db.set_publisher(None)
            await bus.close()
        await db.close()


EMBEDDED_NOTE = (
    "note: embedded mode: this command runs without the server's bus; a running `ctops serve` "
    "picks the change up on its own tick ({tick})."
)


def _embedded_note(settings: Settings, tick: str) -> None:
    if settings.embedded:
        print(EMBEDDED_NOTE.format(tick=tick))


def _run(settings: Settings, work: Callable[[], Awaitable[Any]], **kw: Any) -> Any:
    try:
        return asyncio.run(_with_db(settings, work, **kw))
    except CtopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


# --- commands ---------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    from backend.services import tokens

    if settings.embedded and settings.database_is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate = settings.embedded and settings.database_is_sqlite
    created = _run(settings, tokens.bootstrap_admin, migrate=migrate)
    database = "SQLite" if settings.database_is_sqlite else "PostgreSQL"
    mode = f"embedded ({database}, jobs in-process)" if settings.embedded else "production (jobs in `ctops worker`)"
    print(f"CT-Ops Certificates {mode}")
    if clock.is_shifted():
        print(f"Clock shifted by {clock.offset()}: now reads {clock.now().isoformat()}")
    print(f"GraphQL API: http://{args.host}:{args.port}/graphql")
    if created is not None:
        print("An admin token was created for this new database. It is shown once; keep it:")
        print(f"admin token: {created.secret}", flush=True)
    sys.stdout.flush()
    metrics_dir = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Worker processes share their counters here (set before they import prometheus_client).
        metrics_dir = tempfile.mkdtemp(prefix="ctops-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        _serve(args, settings)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    uvicorn.run(
        "backend.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    async def defaults() -> None:
        from backend.services import alerts

        await alerts.ensure_default_rules()  # a new database gets the default alert rules

    _run(settings, defaults, migrate=True)
    print("database is up to date")


def cmd_makemigrations(args: argparse.Namespace, settings: Settings) -> None:
    written = asyncio.run(db.make_migrations(args.name))
    print("\n".join(written) if written else "No changes detected")


def cmd_export_schema(args: argparse.Namespace, settings: Settings) -> None:
    from backend.schema.api import export_schema

    sys.stdout.write(export_schema())


def cmd_token(args: argparse.Namespace, settings: Settings) -> None:
    from backend.models import Role
    from backend.services import tokens

    if args.token_command == "create":
        role = Role(args.role.upper())

        async def create() -> Any:
            if role is Role.AGENT:
                if not args.host:
                    raise CtopsError("An AGENT token needs --host HOSTNAME (the host it reports for).")
                return await tokens.create_agent_token_for_host(args.host, args.name)
            if args.host:
                raise CtopsError("--host is only for AGENT tokens.")
            return await tokens.create_token(args.name, role)

        created = _run(settings, create)
        print(f"created {created.token.role} token {created.token.name!r}; the secret is shown once:")
        print(created.secret)
    elif args.token_command == "list":

        async def listing() -> list:
            from backend.models import ApiToken

            return await ApiToken.all().order_by("id")

        rows = _run(settings, listing)
        print(f"{'NAME':<32} {'ROLE':<10} {'CREATED':<26} {'LAST USED':<26} REVOKED")
        for t in rows:
            print(
                f"{t.name:<32} {t.role:<10} {t.created_at.isoformat(timespec='seconds'):<26} "
                f"{(t.last_used_at.isoformat(timespec='seconds') if t.last_used_at else '-'):<26} "
                f"{t.revoked_at.isoformat(timespec='seconds') if t.revoked_at else '-'}"
            )
    elif args.token_command == "revoke":
        token = _run(settings, lambda: tokens.revoke_token(name=args.name))
        print(f"revoked token {token.name!r}")
        _embedded_note(settings, "its websocket connections close within CTOPS_WS_AUTH_RECHECK_SECONDS")


def cmd_enrollment_token(args: argparse.Namespace, settings: Settings) -> None:
    from backend.services import enrollment

    created = _run(
        settings, lambda: enrollment.create_enrollment_token(args.name, args.max_uses, args.expires_in_hours)
    )
    token = created.token
    print(
        f"created enrolment token {token.name!r} ({token.max_uses} use(s), expires "
        f"{token.expires_at.isoformat(timespec='seconds')}); the secret is shown once:"
    )
    print(created.secret)


def cmd_seed_demo(args: argparse.Namespace, settings: Settings) -> None:
    from backend.services import demo

    def progress(done: int) -> None:
        print(f"\r{done}/{args.certificates} certificates", end="", file=sys.stderr, flush=True)

    result = _run(
        settings,
        lambda: demo.seed_demo(args.certificates, hosts=args.hosts, progress=progress if sys.stderr.isatty() else None),
        migrate=settings.embedded and settings.database_is_sqlite,
    )
    print(file=sys.stderr)
    print(
        f"seeded {result.certificates} certificates on {result.hosts} hosts "
        f"({result.locations} locations, {result.events} events) in {result.seconds:.1f} s"
    )


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    from backend.jobs import worker

    if args.metrics_port:
        from backend import metrics

        metrics.serve_worker_metrics(args.metrics_port, args.metrics_host)
    worker.run(settings)


def cmd_sweep(args: argparse.Namespace, settings: Settings) -> None:
    from backend.services import sweep

    result = _run(settings, sweep.sweep, migrate=settings.embedded and settings.database_is_sqlite)
    for t in result.transitions:
        name = t.common_name or "(no common name)"
        previous = t.previous.value if t.previous else "-"
        print(f"STATUS_CHANGED  {t.fingerprint[:16]}  {name}  {previous} -> {t.status.value}")
        if t.status.value == "EXPIRED":
            print(f"EXPIRED         {t.fingerprint[:16]}  {name}")
    seconds = (result.finished_at - result.started_at).total_seconds()
    shifted = f"; clock shifted by {clock.offset()}" if clock.is_shifted() else ""
    print(
        f"sweep: {result.status_changes} status change(s), {result.expired} expired, "
        f"in {seconds:.2f} s (now {result.started_at.isoformat(timespec='seconds')}{shifted})"
    )
    if result.transitions:
        _embedded_note(settings, "its subscribers get these events within CTOPS_LIVE_CATCH_UP_TICK_SECONDS")


def cmd_import_urls(args: argparse.Namespace, settings: Settings) -> None:
    from pathlib import Path

    from backend.models import RefreshInterval
    from backend.services import tracked_sources

    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    entries = tracked_sources.parse_url_list(text)
    interactive = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if interactive:
            filled = int(30 * done / total)
            print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)
        elif done == total or done % max(1, total // 10) == 0:
            print(f"{done}/{total} URLs", file=sys.stderr, flush=True)

    outcomes = _run(
        settings,
        lambda: tracked_sources.track_many(
            entries, interval=RefreshInterval(args.interval), concurrency=args.concurrency, settings=settings,
            progress=progress,
        ),
        migrate=settings.embedded and settings.database_is_sqlite,
    )  # fmt: skip
    if interactive and entries:
        print(file=sys.stderr)
    count = {status: sum(o.status == status for o in outcomes) for status in ("TRACKED", "ALREADY_TRACKED", "FAILED")}
    print(f"tracked: {count['TRACKED']}, already tracked: {count['ALREADY_TRACKED']}, failed: {count['FAILED']}")
    for o in outcomes:
        if o.status == "FAILED":
            print(f"  line {o.entry.line}: {o.entry.url}: {o.code}: {o.reason}")
    if count["TRACKED"]:
        _embedded_note(settings, "its subscribers get these events within CTOPS_LIVE_CATCH_UP_TICK_SECONDS")
    if count["FAILED"]:
        raise SystemExit(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctops", description="CT-Ops Certificates server.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="Run the API (embedded mode when DATABASE_URL/REDIS_URL are unset).")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="Apply database migrations.").set_defaults(func=cmd_migrate)
    mk = sub.add_parser("makemigrations", help="(developers) Write migrations for model changes.")
    mk.add_argument("--name")
    mk.set_defaults(func=cmd_makemigrations)
    sub.add_parser("export-schema", help="Print the GraphQL schema (SDL).").set_defaults(func=cmd_export_schema)

    token = sub.add_parser("token", help="API tokens.")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="Create a token; prints the secret on its last line.")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=["VIEWER", "EDITOR", "ADMIN", "AGENT", "viewer", "editor", "admin", "agent"])
    create.add_argument("--host", help="For AGENT tokens: the hostname it reports for.")
    token_sub.add_parser("list", help="List tokens (never their secrets).")
    revoke = token_sub.add_parser("revoke", help="Revoke a token by name.")
    revoke.add_argument("name")
    token.set_defaults(func=cmd_token)

    enrol = sub.add_parser("enrollment-token", help="Enrolment tokens (agents trade one for an AGENT token).")
    enrol_sub = enrol.add_subparsers(dest="enrollment_command", required=True)
    enrol_create = enrol_sub.add_parser("create", help="Create one; prints the secret on its last line.")
    enrol_create.add_argument("--name", required=True)
    enrol_create.add_argument("--max-uses", type=int, default=1, help="How many agents may enrol with it (default 1).")
    enrol_create.add_argument("--expires-in-hours", type=int, default=24, help="Default 24.")
    enrol.set_defaults(func=cmd_enrollment_token)

    seed = sub.add_parser("seed-demo", help="Add demo certificates (real ones, signed by a generated CA).")
    seed.add_argument("--certificates", type=int, default=1000)
    seed.add_argument("--hosts", type=int, default=None)
    seed.set_defaults(func=cmd_seed_demo)

    worker = sub.add_parser("worker", help="Run the arq worker (needs REDIS_URL).")
    worker.add_argument("--metrics-port", type=int, help="Serve this worker's Prometheus counters on this port.")
    worker.add_argument("--metrics-host", default="127.0.0.1", help="Address for --metrics-port (default 127.0.0.1).")
    worker.set_defaults(func=cmd_worker)

    imports = sub.add_parser("import-urls", help="Track one `URL [serverName]` per line of FILE (- for stdin).")
    imports.add_argument("file")
    imports.add_argument("--interval", default="HOURS_1", choices=["MINUTES_15", "HOURS_1", "HOURS_6", "HOURS_24"])
    imports.add_argument("--concurrency", type=int, default=20, help="Fetches at a time (default 20).")
    imports.set_defaults(func=cmd_import_urls)

    sub.add_parser(
        "sweep", help="Record expiry status changes now (one line per event recorded, then a summary)."
    ).set_defaults(func=cmd_sweep)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = settings_module.load()
    _setup_logging(settings)
    args.func(args, settings)


if __name__ == "__main__":
    main()
