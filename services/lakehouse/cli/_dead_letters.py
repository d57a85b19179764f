"""Dead letters: what could not land, and replaying it once the cause is fixed."""

from __future__ import annotations

import datetime as dt
import re
import sys
from typing import Annotated

import typer

from ._app import TextOrJson, _lakehouse, _print_json, dead_letters_app, out

_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
SHOWN_IDS = 10  # ids listed per line of the replay's report before "and N more"


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``--since``: an ISO date or time (UTC unless it says otherwise), or an age (``90m``,
    ``6h``, ``2d``, ``1w``)."""
    now = now or dt.datetime.now(dt.UTC)
    relative = _RELATIVE.match(text.strip().lower())
    if relative:
        return now - dt.timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise typer.BadParameter(
            f"{text!r} is neither a date or time (2026-05-01, 2026-05-01T08:00) nor an age (90m, 6h, 2d, 1w)",
            param_hint="'--since'",
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:SHOWN_IDS])
    return shown + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


@dead_letters_app.command("list")
def dead_letters_list(
    table: Annotated[str | None, typer.Option("--table", help="Only those of LAYER.TABLE")] = None,
    reason_like: Annotated[
        str | None,
        typer.Option("--reason-like", help="Reason matches this pattern (% any text, _ one character)"),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Received since a date/time (UTC) or an age: 90m, 6h, 2d, 1w"),
    ] = None,
    show_payload: Annotated[
        bool,
        typer.Option(
            "--show-payload",
            help="Print each message; sealed personal data is decrypted (recorded in audit.key_log), "
            "never a forgotten customer's",
        ),
    ] = False,
    output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text,
) -> None:
    """Dead letters, oldest first: id, table, where they came from, reason, when, whether replayed."""
    import pyarrow as pa

    from lakehouse.ingest import list_dead_letters

    from ._format import Format, render
    from ._sql import terminal_width

    moment = parse_since(since) if since is not None else None
    lh = _lakehouse()
    letters = list_dead_letters(
        lh.catalog,
        lh.project,
        table=table,
        reason_like=reason_like,
        since=moment,
        show_payload=show_payload,
        keystore=lambda: lh.keystore,
    )
    if output is TextOrJson.json:
        _print_json([d.as_dict() if show_payload else _without_payload(d.as_dict()) for d in letters])
        return
    if not letters:
        out.print("no dead letters" + (" match" if table or reason_like or since else ""), highlight=False)
        return
    columns: dict[str, list[object]] = {
        "id": [d.id for d in letters],
        "table": [d.table for d in letters],
        "route": [d.route for d in letters],
        "received_at": [d.received_at.isoformat(sep=" ", timespec="seconds") for d in letters],
        "replayed": ["yes" if d.replayed else "no" for d in letters],
        "attempts": [d.replay_attempts for d in letters],
        "reason": [d.reason for d in letters],
    }
    if show_payload:
        columns["payload"] = [d.payload for d in letters]
    sys.stdout.write(render(pa.table(columns), Format.table, width=terminal_width(), max_rows=0))


def _without_payload(entry: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in entry.items() if k != "payload"}


@dead_letters_app.command("replay")
def dead_letters_replay(
    table: Annotated[str | None, typer.Option("--table", help="Every dead letter of LAYER.TABLE")] = None,
    ids: Annotated[
        list[str] | None, typer.Option("--id", help="A dead letter's id, as listed (repeat for several)")
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every dead letter not replayed yet")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would happen; write nothing")] = False,
    output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text,
) -> None:
    """Re-submit dead letters through the write path, once what made them fail is fixed (the
    contract, a table declared since): each lands at most once, in the commit that records it;
    those that still fail stay dead letters with their new reason."""
    from lakehouse.ingest import replay_dead_letters

    chosen = sum((table is not None, bool(ids), everything))
    if chosen != 1:
        raise typer.BadParameter(
            "name what to replay: --table LAYER.TABLE, --id ID (repeatable) or --all, one of them"
            + ("" if chosen == 0 else f" (got {chosen})")
        )
    lh = _lakehouse()
    report = replay_dead_letters(
        lh.catalog,
        lh.project,
        table=table,
        ids=ids or (),
        everything=everything,
        dry_run=dry_run,
        keystore=lambda: lh.keystore,
    )
    if output is TextOrJson.json:
        _print_json(report.as_dict())
        return

    def say(text: str) -> None:
        out.print(text, highlight=False, markup=False, soft_wrap=True)

    if dry_run:
        say("dry run: nothing was written")
    for target, landed in report.landed.items():
        say(
            f"{'would land' if dry_run else 'landed'} {len(landed)} dead letter(s) ({report.rows.get(target, 0)} "
            f"row(s)) into {target}: {_ids(landed)}"
        )
    failing = report.failures_by_reason()
    if failing:
        if dry_run:
            say(f"{len(report.failed)} would still fail, and stay dead letters:")
        else:
            say(
                f"{len(report.failed)} still failing, kept as dead letters with the new reason (attempt recorded):"
            )
        for failed_in, reason, letter_ids in failing:
            say(f"  {len(letter_ids)} x {failed_in}: {reason}")
            say(f"      {_ids(letter_ids)}")
    if report.already:
        say(f"{len(report.already)} already replayed, not landed again: {_ids(report.already)}")
    for letter_id, held_for, why in report.not_replayable:
        say(f"not replayable: {letter_id} ({held_for}): {why}")
    if not (report.landed or failing or report.already or report.not_replayable):
        say("nothing to replay: there are no dead letters")
