"""`lakehouse-edge enroll|run|status`: argparse, so the agent needs no CLI library.

Errors are one line on stderr saying what was wrong and what to do: exit 2 for usage errors
(argparse's, with the usage), exit 1 for everything else; ``--debug`` (or LAKEHOUSE_EDGE_DEBUG=1)
adds the traceback."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import sources
from .agent import Agent, enroll
from .client import gateway_address
from .errors import AgentError, EdgeError, GatewayURLError
from .queue import POLICIES, UploadQueue

DEFAULT_STATE_DIR = Path(os.environ.get("STATE_DIRECTORY", "/var/lib/lakehouse-edge"))
TOKEN_ENV = "LAKEHOUSE_EDGE_ENROLLMENT_TOKEN"  # noqa: S105 (a variable name, not a secret)
DEBUG_ENV = "LAKEHOUSE_EDGE_DEBUG"
PROG = "lakehouse-edge"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SOURCE_KINDS = ("simulated", "csv", "stdin", "none")


def _enrollment_token(args: argparse.Namespace) -> str:
    """From a file (or - for stdin) or the environment: never from the command line, where
    every local user could read it in the process list."""
    if args.token_file:
        reads_stdin = args.token_file == "-"  # noqa: S105 (a file name, not a secret)
        try:
            text = sys.stdin.read() if reads_stdin else Path(args.token_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "it is not text"
            raise AgentError(
                f"cannot read the enrollment token from {args.token_file}: {why}; "
                f"pass --token-file FILE (or - for stdin), or set {TOKEN_ENV}"
            ) from exc
    else:
        text = os.environ.get(TOKEN_ENV, "")
    if not text.strip():
        where = f"{args.token_file} is empty" if args.token_file else "no enrollment token"
        raise AgentError(f"{where}: pass --token-file FILE (or -), or set {TOKEN_ENV}")
    return text.strip()


def _source(args: argparse.Namespace, store_id: str) -> Iterator[dict[str, Any]] | None:
    kind, _, arg = args.source.partition(":")
    if kind == "none":  # only deliver what is queued
        return None
    if kind == "simulated":
        units = args.units or sources.parse_units(f"D-{store_id}-1:fridge,D-{store_id}-2:freezer")
        return sources.simulated(
            units,
            start=args.start,
            seconds_per_reading=args.seconds_per_reading,
            seed=args.seed,
            limit=args.limit,
        )
    if kind == "csv":
        if not Path(arg).is_file():
            raise AgentError(f"the CSV source {arg} is not a file: check --source csv:PATH")
        return sources.from_csv(Path(arg))
    return sources.from_stdin()


# --- argument types: a bad value is a usage error (exit 2) naming the option ------------------


def _source_spec(text: str) -> str:
    kind, _, arg = text.partition(":")
    if kind not in SOURCE_KINDS or (kind == "csv") != bool(arg):
        raise argparse.ArgumentTypeError(f"{text!r} is not simulated, csv:PATH, stdin or none")
    return text


def _gateway_url(text: str) -> str:
    try:
        gateway_address(text)
    except GatewayURLError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _units(text: str) -> list[tuple[str, str]]:
    try:
        return sources.parse_units(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _timestamp(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time (2026-03-02T10:00)") from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="The lakehouse edge agent: enroll, run, status.")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="keys, identity and queue")
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS)
    parser.add_argument(
        "--debug", action="store_true", help=f"show the traceback of an error (or set {DEBUG_ENV}=1)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p_enroll = commands.add_parser("enroll", help="make this device's key pair and register it")
    p_enroll.add_argument("--gateway", required=True, type=_gateway_url, help="https://HOST:PORT")
    p_enroll.add_argument("--ca-file", type=Path, help="CA certificate that signed the gateway's (PEM)")
    p_enroll.add_argument(
        "--token-file", help=f"file with the one-time enrollment token, - for stdin (or ${TOKEN_ENV})"
    )

    p_run = commands.add_parser("run", help="collect, queue and upload until stopped")
    p_run.add_argument(
        "--source",
        default="simulated",
        type=_source_spec,
        help="simulated | csv:PATH | stdin | none (deliver the queue only)",
    )
    p_run.add_argument("--units", type=_units, help="simulated units, e.g. D-S001-1:fridge,D-S001-2:freezer")
    p_run.add_argument(
        "--start", type=_timestamp, help="simulated: first reading time (ISO 8601, default now)"
    )
    p_run.add_argument(
        "--seconds-per-reading", type=float, default=60.0, help="simulated: real seconds per round"
    )
    p_run.add_argument("--seed", type=int)
    p_run.add_argument("--limit", type=int, help="simulated: stop after this many readings")
    p_run.add_argument("--batch-size", type=int, default=96, help="readings per sealed batch")
    p_run.add_argument("--batch-seconds", type=float, default=60.0, help="seal at least this often")
    p_run.add_argument("--max-queue-mb", type=float, default=256.0, help="disk the queue may use")
    p_run.add_argument("--when-full", choices=POLICIES, default="drop-oldest")
    p_run.add_argument("--backoff-cap", type=float, default=60.0, help="longest wait between retries (s)")
    p_run.add_argument(
        "--exit-when-drained", action="store_true", help="exit once the source ended and all is uploaded"
    )

    commands.add_parser("status", help="identity and queue as JSON")
    return parser


def _run(args: argparse.Namespace) -> None:
    if args.command == "enroll":
        identity = enroll(args.state_dir, args.gateway, _enrollment_token(args), args.ca_file)
        print(json.dumps({"device_id": identity.device_id, "store_id": identity.store_id}))
    elif args.command == "run":
        agent = Agent(
            args.state_dir,
            batch_size=args.batch_size,
            batch_seconds=args.batch_seconds,
            max_queue_bytes=int(args.max_queue_mb * 1024 * 1024),
            when_full=args.when_full,
            backoff_cap_s=args.backoff_cap,
        )
        signal.signal(signal.SIGTERM, agent.stop)
        signal.signal(signal.SIGINT, agent.stop)
        agent.run(_source(args, agent.identity.store_id), exit_when_drained=args.exit_when_drained)
    else:
        queue = UploadQueue(args.state_dir / "queue.sqlite")
        identity_file = args.state_dir / "device.json"
        enrolled = json.loads(identity_file.read_text()) if identity_file.exists() else None
        print(json.dumps({"identity": enrolled, "queue": queue.status()}, indent=2))


def _message(exc: BaseException, state_dir: Path) -> str:
    """One line saying what went wrong and what to do."""
    if isinstance(exc, EdgeError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.filename is not None:  # the state directory, mostly
        text = (
            f"cannot use {exc.filename}: {exc.strerror or exc}; check --state-dir ({state_dir}) "
            "and that this user may write it"
        )
    else:
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f" (at {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno})" if tb else ""
        text = (
            f"{type(exc).__name__}: {exc}{where}; this is unexpected: rerun with --debug "
            f"(or {DEBUG_ENV}=1) for the traceback, and report it"
        )
    return " ".join(text.split())  # one line, whatever the exception's text holds


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # a usage error: argparse prints usage and a line, exit 2
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        _run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"{PROG}: error: {_message(exc, args.state_dir)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
