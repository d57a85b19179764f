"""`lakehouse-edge enroll|run|status`: argparse, so the agent needs no CLI library."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import sources
from .agent import Agent, enroll
from .errors import AgentError
from .queue import POLICIES, UploadQueue

DEFAULT_STATE_DIR = Path(os.environ.get("STATE_DIRECTORY", "/var/lib/lakehouse-edge"))
TOKEN_ENV = "LAKEHOUSE_EDGE_ENROLLMENT_TOKEN"  # noqa: S105 (a variable name, not a secret)


def _enrollment_token(args: argparse.Namespace) -> str:
    """From a file (or - for stdin) or the environment: never from the command line, where
    every local user could read it in the process list."""
    if args.token_file:
        reads_stdin = args.token_file == "-"  # noqa: S105 (a file name, not a secret)
        text = sys.stdin.read() if reads_stdin else Path(args.token_file).read_text()
    else:
        text = os.environ.get(TOKEN_ENV, "")
    if not text.strip():
        raise AgentError(f"no enrollment token: pass --token-file FILE (or -), or set {TOKEN_ENV}")
    return text.strip()


def _source(args: argparse.Namespace, store_id: str) -> Iterator[dict[str, Any]] | None:
    kind, _, arg = args.source.partition(":")
    if kind == "none":  # only deliver what is queued
        return None
    if kind == "simulated":
        units = sources.parse_units(args.units or f"D-{store_id}-1:fridge,D-{store_id}-2:freezer")
        start = dt.datetime.fromisoformat(args.start) if args.start else None
        return sources.simulated(
            units, start=start, seconds_per_reading=args.seconds_per_reading, seed=args.seed, limit=args.limit
        )
    if kind == "csv" and arg:
        return sources.from_csv(Path(arg))
    if kind == "stdin":
        return sources.from_stdin()
    raise AgentError(f"unknown source {args.source!r}: use simulated, csv:PATH, stdin or none")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lakehouse-edge", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="keys, identity and queue")
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command", required=True)

    p_enroll = commands.add_parser("enroll", help="make this device's key pair and register it")
    p_enroll.add_argument("--gateway", required=True, help="https://HOST:PORT")
    p_enroll.add_argument("--ca-file", type=Path, help="CA certificate that signed the gateway's (PEM)")
    p_enroll.add_argument(
        "--token-file", help=f"file with the one-time enrollment token, - for stdin (or ${TOKEN_ENV})"
    )

    p_run = commands.add_parser("run", help="collect, queue and upload until stopped")
    p_run.add_argument(
        "--source", default="simulated", help="simulated | csv:PATH | stdin | none (deliver the queue only)"
    )
    p_run.add_argument("--units", help="simulated units, e.g. D-S001-1:fridge,D-S001-2:freezer")
    p_run.add_argument("--start", help="simulated: first reading time (ISO 8601, default now)")
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
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
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
    except AgentError as exc:
        logging.getLogger("lakehouse_edge").error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
