"""Servers the platform starts on this machine (the stack: SeaweedFS, PostgreSQL, Nessie, OPA,
Trino, Apache Kafka; the local profile's Tansu broker), stopped by PID."""

from __future__ import annotations

from ._artifacts import Layout, default_cache, find_java, go_tool, layouts, load_lock
from ._artifacts import install as install_artifacts
from ._broker import bootstrap_servers, read_broker_state, start_broker, stop_broker
from ._process import (
    free_port,
    group_members,
    listening_sockets,
    listens,
    log_tail,
    stop_recorded,
    terminate,
    venv_binary,
    wait_for_port,
)
from ._service import Running
from ._stack import SERVICES, stack_status, stack_tls, start_stack, stop_stack

__all__ = [
    "SERVICES",
    "Layout",
    "Running",
    "bootstrap_servers",
    "default_cache",
    "find_java",
    "free_port",
    "go_tool",
    "group_members",
    "install_artifacts",
    "layouts",
    "listening_sockets",
    "listens",
    "load_lock",
    "log_tail",
    "read_broker_state",
    "stack_status",
    "stack_tls",
    "start_broker",
    "start_stack",
    "stop_broker",
    "stop_recorded",
    "stop_stack",
    "terminate",
    "venv_binary",
    "wait_for_port",
]
