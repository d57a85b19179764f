"""The command group, its sub-groups, and how results are printed (text or JSON, once)."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lakehouse.config import Settings

if TYPE_CHECKING:
    from lakehouse._api import Lakehouse


app = typer.Typer(no_args_is_help=True, add_completion=False, help="The lakehouse platform.")


stack_app = typer.Typer(
    no_args_is_help=True, help="The stack profile's servers (SeaweedFS S3 + Iceberg REST)."
)


contracts_app = typer.Typer(no_args_is_help=True, help="Bronze data contracts.")


broker_app = typer.Typer(no_args_is_help=True, help="The embedded Kafka-compatible broker (Tansu).")


sink_app = typer.Typer(no_args_is_help=True, help="Kafka topics into bronze Iceberg tables, exactly once.")


app.add_typer(stack_app, name="stack")


app.add_typer(broker_app, name="broker")


app.add_typer(sink_app, name="sink")


app.add_typer(contracts_app, name="contracts")


gateway_app = typer.Typer(
    no_args_is_help=True, help="The edge gateway: devices upload sealed batches over TLS."
)


devices_app = typer.Typer(
    no_args_is_help=True, help="Edge devices: enrollment tokens, the registry, revocation."
)


app.add_typer(gateway_app, name="gateway")


app.add_typer(devices_app, name="devices")


maintain_app = typer.Typer(no_args_is_help=True, help="Table maintenance.")


policy_app = typer.Typer(
    no_args_is_help=True, help="Access policies (policies/): check, compile, bundle, explain."
)


keys_app = typer.Typer(no_args_is_help=True, help="The keystore of per-customer data keys.")


gdpr_app = typer.Typer(no_args_is_help=True, help="Data subjects' rights: erasure by crypto-shredding.")


app.add_typer(keys_app, name="keys")


app.add_typer(gdpr_app, name="gdpr")


app.add_typer(policy_app, name="policy")


app.add_typer(maintain_app, name="maintain")


dead_letters_app = typer.Typer(
    no_args_is_help=True, help="Messages that could not land: list them, replay them once fixed."
)


app.add_typer(dead_letters_app, name="dead-letters")


out = Console(soft_wrap=True)


err = Console(stderr=True, soft_wrap=True)


class TextOrJson(StrEnum):
    text = "text"
    json = "json"


class FileFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"
    jsonl = "jsonl"


def _lakehouse() -> Lakehouse:
    from lakehouse._api import Lakehouse

    return Lakehouse(Settings.load())


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _print_mapping(result: dict[str, Any], output: TextOrJson) -> None:
    if output is TextOrJson.json:
        _print_json(result)
    else:
        for key, value in result.items():
            out.print(f"{key}: {value}", highlight=False)


def progress_bar(console: Console, *, quiet: bool = False) -> Progress:
    """The CLI's progress bar on ``console`` (stderr), drawn only when it is a terminal (and not
    ``quiet``), gone once the work is done."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet or not console.is_terminal,
    )
