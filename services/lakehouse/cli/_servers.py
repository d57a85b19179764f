"""The servers and streams the platform runs: the stack, the broker, the event producer, the
Kafka sink."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from lakehouse.config import BrokerSettings, Settings, apply_stack_state, project_of
from lakehouse.errors import LakehouseError

from ._app import TextOrJson, _lakehouse, _print_json, app, broker_app, err, out, sink_app, stack_app


@stack_app.command("start")
def stack_start(
    services: Annotated[
        str | None,
        typer.Option(
            "--services",
            help="Comma-separated: seaweedfs, postgres, nessie, opa, trino, kafka (their dependencies "
            "come with them); default: all",
        ),
    ] = None,
    output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text,
) -> None:
    """Start the stack on loopback, in order: SeaweedFS (S3 with SSE), PostgreSQL, Nessie, OPA,
    Trino, Apache Kafka, from the artifacts `lakehouse stack install` verified. Each is waited
    for until a real request answers; if one fails, those started by this command stop again."""
    from lakehouse.local import stack_status, start_stack

    settings = Settings.load(profile="stack")
    start_stack(settings, services=services.split(",") if services else None)
    status = stack_status(settings)
    if output is TextOrJson.json:
        _print_json(status)
        return
    for name, service in status.items():
        seconds = f" in {service['start_seconds']}s" if service.get("start_seconds") is not None else ""
        where = ", ".join(f"{k} {v}" for k, v in service["endpoints"].items())
        out.print(f"{name:<10} running (pid {service['pid']}){seconds}: {where}")
    out.print("use it with LAKEHOUSE_PROFILE=stack; `lakehouse stack status` shows each service's health")


@stack_app.command("stop")
def stack_stop() -> None:
    """Stop every stack service by the PID (and start time) it recorded, the last started first."""
    from lakehouse.local import stop_stack

    out.print("stopped" if stop_stack(Settings.load(profile="stack")) else "not running")


@stack_app.command("status")
def stack_status(output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text) -> None:
    """Each stack service: running (its recorded process lives), healthy (it answers on its
    port), pid, endpoints and log. Exit code 1 if a recorded service is down or not answering."""
    from lakehouse.local import stack_status as status_of

    status = status_of(Settings.load(profile="stack"))
    if output is TextOrJson.json:
        _print_json(
            {"running": bool(status) and all(s["running"] for s in status.values()), "services": status}
        )
    elif not status:
        out.print("not running")
    else:
        for name, service in status.items():
            health = "healthy" if service["healthy"] else ("not answering" if service["running"] else "down")
            where = ", ".join(f"{k} {v}" for k, v in service["endpoints"].items())
            out.print(f"{name:<10} {health} (pid {service['pid']}): {where}")
    unhealthy = [name for name, service in status.items() if not service["healthy"]]
    if unhealthy:
        raise LakehouseError(
            f"not healthy: {', '.join(unhealthy)} (their logs are named above; `lakehouse stack stop`, then start)"
        )


@stack_app.command("install")
def stack_install(
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            help="Comma-separated services (trino, nessie, kafka, opa) or artifact names; default: all",
        ),
    ] = None,
    output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text,
) -> None:
    """Fetch the pinned server artifacts (infra/artifacts.lock.json) into the cache, verify their
    sha256 before use, build OPA with `go install`, and unpack Trino. Verified files are reused
    without the network; a missing JDK or Go is named before anything is downloaded."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from lakehouse.local import default_cache, install_artifacts, load_lock

    lock = load_lock()
    chosen = lock.select(only.split(",") if only else None)
    cache = default_cache()
    bars = output is TextOrJson.text and err.is_terminal
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=True,
        disable=not bars,
    ) as progress:
        tasks: dict[str, Any] = {}

        def advance(artifact: Any, received: int) -> None:
            if artifact.name not in tasks:
                tasks[artifact.name] = progress.add_task(
                    f"{artifact.name} {artifact.version}", total=artifact.size
                )
            progress.update(tasks[artifact.name], completed=received)

        def done(step: Any) -> None:
            if step.name in tasks:  # one bar at a time: the finished artifact's goes
                progress.remove_task(tasks.pop(step.name))
            if output is TextOrJson.text and step.action != "cached":
                # above the bars on a terminal (the bars' console), else plainly on stdout
                (progress.console if bars else out).print(
                    f"{step.action} {step.name} {step.version} ({step.seconds:.1f} s)"
                )

        steps = install_artifacts(
            [a.name for a in chosen], lock=lock, cache=cache, progress=advance, on_step=done
        )
    if output is TextOrJson.json:
        _print_json({"cache": str(cache), "steps": [step.__dict__ for step in steps]})
        return
    counts = {
        action: sum(1 for s in steps if s.action == action) for action in ("fetched", "built", "unpacked")
    }
    reused = sum(1 for s in steps if s.action == "cached")
    fetched_mb = sum(s.size for s in steps if s.action == "fetched") / 1e6
    out.print(
        f"{len(chosen)} artifacts verified in {cache}: {counts['fetched']} fetched ({fetched_mb:.0f} MB), "
        f"{reused} reused from the cache, {counts['built']} built, {counts['unpacked']} unpacked"
    )


def _broker(settings: Settings) -> BrokerSettings:
    """The broker's settings with its address resolved (``bootstrap_servers``: the configured
    or the stack's Kafka's, else the Tansu `lakehouse broker start` recorded)."""
    from lakehouse.local import bootstrap_servers

    return settings.broker.model_copy(update={"bootstrap": bootstrap_servers(settings)})


@broker_app.command("start")
def broker_start(port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: a free one)")] = 0) -> None:
    """Start Tansu on loopback (its log on S3 in the stack profile) and record its address."""
    from lakehouse.local import start_broker

    settings = Settings.load()
    state = start_broker(settings, port=port or None)
    out.print(f"broker running (pid {state['pid']}) at {state['bootstrap']}, storage {state['storage']}")
    if settings.profile == "stack" and not settings.broker.bootstrap:
        kafka = apply_stack_state(settings).broker
        if kafka.bootstrap:
            err.print(
                f"note: the stack's Apache Kafka runs at {kafka.bootstrap}; the stack profile's "
                "producers and sinks use it, not this broker (LAKEHOUSE_BROKER__BOOTSTRAP picks one)"
            )


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the broker by the PID it recorded."""
    from lakehouse.local import stop_broker

    out.print("stopped" if stop_broker(Settings.load()) else "not running")


@broker_app.command("status")
def broker_status(output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text) -> None:
    """Show whether the broker runs and where."""
    from lakehouse.config import recorded_alive
    from lakehouse.local import read_broker_state

    state = read_broker_state(Settings.load())
    public = {**state, "running": recorded_alive(state)} if state else {"running": False}
    if output is TextOrJson.json:
        _print_json(public)
    else:
        out.print(" ".join(f"{k}={v}" for k, v in public.items()))


@app.command()
def produce(
    topic: Annotated[str, typer.Option("--topic", help="Topic (feeds the bronze table of the same name)")],
    count: Annotated[int | None, typer.Option(help="Publish exactly this many events")] = None,
    rate: Annotated[float | None, typer.Option(help="Events per second (with --duration)")] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds to publish at --rate")] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same events")] = 42,
    start: Annotated[int, typer.Option(help="Index of the first event")] = 0,
    scale: Annotated[
        float, typer.Option(help="Draw store/product/customer ids from this scale's domain")
    ] = 1.0,
) -> None:
    """Publish the reference domain's operational events to a Kafka topic (in the stack
    profile: the stack's Apache Kafka when it runs, over SASL_SSL)."""
    from lakehouse.reference import produce as publish

    if (count is None) == (rate is None) or (rate is not None and duration is None):
        raise LakehouseError("give --count N, or --rate R with --duration S")
    settings = Settings.load()
    if settings.profile == "stack":
        settings = apply_stack_state(settings)
    sent = publish(
        _broker(settings),
        topic,
        count=count,
        rate=rate,
        duration=duration,
        seed=seed,
        start=start,
        partitions=settings.broker.partitions,
        scale=scale,
        project=project_of(settings),
    )
    out.print(f"published {sent} events to {topic}")


@sink_app.command("run")
def sink_run(
    topics: Annotated[
        list[str] | None,
        typer.Option(
            "--topics", help="Topics to sink (default: every bronze table of the project's contracts)"
        ),
    ] = None,
    idle_exit: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without messages")
    ] = None,
    batch_records: Annotated[int, typer.Option(help="Commit at most this many messages at once")] = 50_000,
    batch_seconds: Annotated[
        float, typer.Option(help="Commit at least this often while messages flow")
    ] = 2.0,
    batch_min_records: Annotated[
        int, typer.Option(help="Commit as soon as caught up with the topics once this many are held")
    ] = 10_000,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus /metrics and /healthz (readiness) on sink.metrics_host, 127.0.0.1 "
            "by default (0: free port; default: sink.metrics_port, else not served)"
        ),
    ] = None,
    accept_offset_reset: Annotated[
        bool,
        typer.Option(
            "--accept-offset-reset",
            help="When the broker's log no longer holds what a table's offsets count (it restarted "
            "empty, the topic was created again, records were deleted unread), record the reset in "
            "the table and read those partitions from the log's start, instead of stopping",
        ),
    ] = False,
    output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text,
) -> None:
    """Consume topics into their bronze tables, exactly once; SIGTERM flushes and commits. On a
    terminal a live line on stderr shows rows, rows/s, lag per topic and dead letters. In the
    stack profile the topics are the stack's Apache Kafka's when it runs (SASL_SSL)."""
    from lakehouse.contracts import load_contracts
    from lakehouse.ingest import serve_metrics, sink_readiness
    from lakehouse.ingest.kafka import LiveLine, Sink
    from lakehouse.reference import ensure_topics

    lh = _lakehouse()
    settings = lh.settings  # the stack's endpoints and credentials applied (Lakehouse)
    declared = [c.name for c in load_contracts(lh.project).values() if c.layer == "bronze" and not c.system]
    chosen = [t for item in (topics or declared) for t in item.split(",") if t]
    broker = _broker(settings)
    ensure_topics(broker, chosen, settings.broker.partitions)
    sink = Sink(
        lh.catalog,
        broker,
        chosen,
        group=settings.broker.group,
        batch_max_records=batch_records,
        batch_max_seconds=batch_seconds,
        batch_min_records=batch_min_records,
        idle_exit=idle_exit,
        project=lh.project,
        settings=settings,
        accept_offset_reset=accept_offset_reset,
    )
    port = settings.sink.metrics_port if metrics_port is None else metrics_port
    server = None
    if port is not None:
        server = serve_metrics(sink.stats, port, host=settings.sink.metrics_host, ready=sink_readiness(sink))
        err.print(f"metrics at {server.url}/metrics")
    live = LiveLine(sink.stats, sys.stderr).start() if sys.stderr.isatty() else None
    try:
        stats = sink.run()
    finally:
        if live is not None:
            live.close()
        if server is not None:
            server.shutdown()
    if output is TextOrJson.json:
        _print_json(stats.summary())
    else:
        summary = stats.summary()
        out.print(
            f"committed {sum(summary['rows'].values())} rows in {summary['commits']} commits, "
            f"{sum(summary['dead_letters'].values())} dead letters; commit p50 {summary['commit_p50_s'] * 1000:.0f} ms"
        )
