"""The edge gateway and its devices."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.table import Table as RichTable

from lakehouse.config import Settings
from lakehouse.errors import ServerError

from ._app import TextOrJson, _print_json, _print_mapping, devices_app, err, gateway_app, out

UVICORN_STARTUP_FAILURE = 3  # uvicorn exits with this when it cannot bind or start the app


@gateway_app.command("serve")
def gateway_serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default: gateway.host)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: gateway.port; 0: a free one)")] = None,
) -> None:
    """Serve the gateway over TLS until SIGTERM (locally with a private CA under state/)."""
    from lakehouse.ingest.edge import serve

    logging.getLogger("lakehouse").setLevel(logging.INFO)
    settings = Settings.load()
    try:
        serve(settings, host=host, port=port)
    except SystemExit as exc:
        if exc.code != UVICORN_STARTUP_FAILURE:
            raise
        where = f"{host or settings.gateway.host}:{settings.gateway.port if port is None else port}"
        raise ServerError(
            f"the gateway did not start on {where} (the reason is logged above): "
            "choose another --host or --port (gateway.host, gateway.port)"
        ) from None


@gateway_app.command("tls")
def gateway_tls(output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text) -> None:
    """Show (creating them locally if needed) the gateway's TLS files; agents trust the CA file."""
    from lakehouse.ingest.edge import tls_files

    ca, cert, key = tls_files(Settings.load())
    _print_mapping({"ca_file": str(ca) if ca else None, "cert_file": str(cert), "key_file": str(key)}, output)


@gateway_app.command("rotate-keys")
def gateway_rotate_keys(
    signing: Annotated[bool, typer.Option(help="Rotate the key that signs device tokens")] = True,
    ingest: Annotated[bool, typer.Option(help="Rotate the key that batches are sealed for")] = False,
) -> None:
    """Add a new active key; a running gateway picks it up within a second (no restart). Tokens
    signed and batches sealed with the previous key stay valid while they may still arrive."""
    from lakehouse.ingest.edge import rotate_gateway_keys

    if not signing and not ingest:
        raise typer.BadParameter("nothing to rotate: give --signing, --ingest or both")
    for kind, kid in rotate_gateway_keys(Settings.load(), signing=signing, ingest=ingest):
        out.print(f"{kind} key is now {kid}", highlight=False)


@gateway_app.command("openapi")
def gateway_openapi() -> None:
    """Print the gateway's OpenAPI description (JSON)."""
    from lakehouse.ingest.edge import build_app

    _print_json(build_app(Settings.load()).openapi())


@devices_app.command("enroll")
def devices_enroll(
    store: Annotated[str, typer.Option(help="The store the device will report for (as in bronze.stores)")],
    unit: Annotated[
        list[str] | None,
        typer.Option(help="A refrigeration unit of STORE not yet in bronze.devices (repeatable)"),
    ] = None,
    output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text,
) -> None:
    """Issue a one-time, short-lived enrollment token for one device of STORE (shown once)."""
    import datetime as dt

    from lakehouse.ingest.edge import issue_enrollment_token

    token, expires = issue_enrollment_token(Settings.load(), store, unit or ())
    expires_at = dt.datetime.fromtimestamp(expires, dt.UTC).isoformat(timespec="seconds")
    if output is TextOrJson.json:
        _print_json({"enrollment_token": token, "store_id": store, "expires_at": expires_at})
    else:
        out.print(token, highlight=False)
        err.print(f"single use, for store {store}, expires {expires_at}", highlight=False)


@devices_app.command("list")
def devices_list(output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text) -> None:
    """Enrolled devices with their store and status (control characters shown escaped)."""
    import datetime as dt

    from rich.text import Text

    from lakehouse.ingest.edge import escape, registry

    reg = registry(Settings.load())
    try:
        rows = [
            {
                "device_id": d.device_id,
                "store_id": d.store_id,
                "name": d.name,
                "status": d.status,
                "enrolled_at": dt.datetime.fromtimestamp(d.enrolled_at, dt.UTC).isoformat(timespec="seconds"),
            }
            for d in reg.devices()
        ]
    finally:
        reg.close()
    if output is TextOrJson.json:
        _print_json(rows)
        return
    table = RichTable("device_id", "store_id", "name", "status", "enrolled_at")
    for row in rows:  # Text, not markup: a name like "[blink]" is shown as typed
        table.add_row(*(Text(escape(str(v or ""))) for v in row.values()))
    out.print(table)


@devices_app.command("revoke")
def devices_revoke(device_id: Annotated[str, typer.Argument(help="The device to revoke")]) -> None:
    """Revoke a device: its tokens stop working on its next request."""
    from lakehouse.ingest.edge import escape, revoke_device

    device = revoke_device(Settings.load(), device_id)
    out.print(
        f"revoked {escape(device.device_id)} (store {escape(device.store_id)})", highlight=False, markup=False
    )
