"""``ctops-agent``: scan, enroll, run.

Exit codes: 0 done; 1 the server could not be reached or refused (the reason is
printed, never the token); 2 bad arguments or configuration.

The HTTP client (urllib, http.client, email: a quarter of the start-up time)
is imported only by the commands that talk to the server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from agent import __version__, config


def _port(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a port number nor 'auto'") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port number")
    return port


def _ports(values: list[int | str] | None) -> list[int] | str | None:
    return None if values is None else config.parse_ports(values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctops-agent", description="Find the certificates on this host and report them to CT-Ops."
    )
    parser.add_argument("--version", action="version", version=f"ctops-agent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = f"configuration file (default: {config.SYSTEM_CONFIG} as root, else ~/.config/ctops/agent.toml)"

    scan = commands.add_parser("scan", help="scan this host and print what was found; sends nothing")
    scan.add_argument(
        "paths", nargs="*", metavar="PATH", help="files or directories (default: the configured and default paths)"
    )
    scan.add_argument("--port", action="append", type=_port, metavar="PORT", help="TCP port or 'auto' (repeatable)")
    scan.add_argument(
        "--json",
        action="store_true",
        help="print the document run would send, plus fingerprintSha256, commonName and notAfter per item",
    )
    scan.add_argument("--config", metavar="PATH", help=config_help)

    enroll = commands.add_parser("enroll", help="register this host with the server and write the configuration")
    enroll.add_argument("--server", required=True, metavar="URL", help="the server's base URL")
    enroll.add_argument(
        "--enrollment-token",
        default=os.environ.get("CTOPS_ENROLLMENT_TOKEN"),
        metavar="TOKEN",
        help="one-time enrollment token (default: $CTOPS_ENROLLMENT_TOKEN)",
    )
    enroll.add_argument("--config", metavar="PATH", help="where to write the configuration (same default as scan)")
    enroll.add_argument("--hostname", metavar="NAME", help="the name this host reports (default: its FQDN)")
    enroll.add_argument("--ca-file", metavar="PEM", help="CA certificate(s) to trust for the server (kept in the config)")

    run = commands.add_parser("run", help="scan and report every interval_seconds")
    run.add_argument("--once", action="store_true", help="scan and report once; exit 1 if the report failed")
    run.add_argument("--config", metavar="PATH", help=config_help)
    run.add_argument("--path", action="append", metavar="PATH", help="scan this instead of the configured paths")
    run.add_argument(
        "--port", action="append", type=_port, metavar="PORT", help="probe this instead of the configured ports"
    )
    return parser


def _fail(message: str, code: int) -> int:
    print(f"ctops-agent: {message}", file=sys.stderr)
    return code


def cmd_scan(args: argparse.Namespace) -> int:
    from agent import host

    settings = config.load(args.config)
    progress = None
    if sys.stderr.isatty() and not args.json:
        from agent.display import ProgressLine

        progress = ProgressLine(sys.stderr)
    try:
        result = host.scan_host(settings, paths=args.paths or None, ports=_ports(args.port), progress=progress)
    finally:
        if progress is not None:
            progress.finish()
    if args.json:
        sys.stdout.write(json.dumps(result.document, separators=(",", ":"), check_circular=False) + "\n")
    else:
        _print_human(result)
    return 0


def _print_human(result) -> None:
    from backend import clock

    from agent import display

    document, out = result.document, sys.stdout
    if document["items"]:
        out.write(display.table(document["items"], clock.now(), colour=display.wants_colour(out)))
    for error in document["errors"]:
        out.write(f"error: {error['path']}: {error['reason']}\n")
    counts = (result.files_read, len(document["items"]), len(document["errors"]), document["complete"])
    out.write(display.summary(*counts) + "\n")


def cmd_enroll(args: argparse.Namespace) -> int:
    from agent import client, report

    if not args.enrollment_token:
        return _fail("enroll needs --enrollment-token (or $CTOPS_ENROLLMENT_TOKEN)", 2)
    path = args.config or config.default_config_path()
    existing = config.load(path) if os.path.exists(path) else None
    hostname = args.hostname or (existing.hostname if existing else config.default_hostname())
    server_url = args.server.rstrip("/")
    ca_file = os.path.abspath(args.ca_file) if args.ca_file else (existing.ca_file if existing else None)
    try:
        result = client.enroll(
            server_url, args.enrollment_token, hostname=hostname, os_name=report.os_description(), ca_file=ca_file
        )
    except client.RequestFailed as exc:
        return _fail(f"enrollment failed: {exc}", 1)
    settings = {"server_url": server_url, "token": result["agentToken"], "hostname": hostname}
    if ca_file:
        settings["ca_file"] = ca_file
    config.write(path, settings)
    host = result.get("host") or {}
    enrolled = f"enrolled {host.get('hostname', hostname)} (host {host.get('id', '?')})"
    print(f"{enrolled}; configuration written to {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import logging

    from agent import client, runner

    settings = config.load(args.config, required=True)
    if not settings.server_url or not settings.token:
        return _fail("not enrolled: the configuration has no server_url or token (see ctops-agent enroll)", 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    ports = _ports(args.port)
    if args.once:
        try:
            runner.report_once(settings, paths=args.path, ports=ports)
        except client.RequestFailed as exc:
            return _fail(f"report failed: {exc}", 1)
        return 0
    try:
        runner.run_forever(settings, paths=args.path, ports=ports)
    except KeyboardInterrupt:
        return 0
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"scan": cmd_scan, "enroll": cmd_enroll, "run": cmd_run}[args.command]
    try:
        return handler(args)
    except config.ConfigError as exc:
        return _fail(str(exc), 2)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
