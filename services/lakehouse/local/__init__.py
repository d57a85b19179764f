"""Servers the platform starts on this machine (SeaweedFS, the Kafka broker), stopped by PID."""

from __future__ import annotations

from ._artifacts import Layout, default_cache, find_java, layouts, load_lock
from ._artifacts import install as install_artifacts
from ._broker import bootstrap_servers, read_broker_state, start_broker, stop_broker
from ._process import free_port, listens, log_tail, stop_recorded, terminate, venv_binary, wait_for_port
from ._stack import start_stack, stop_stack

__all__ = [
    "Layout",
    "bootstrap_servers",
    "default_cache",
    "find_java",
    "free_port",
    "install_artifacts",
    "layouts",
    "listens",
    "load_lock",
    "log_tail",
    "read_broker_state",
    "start_broker",
    "start_stack",
    "stop_broker",
    "stop_recorded",
    "stop_stack",
    "terminate",
    "venv_binary",
    "wait_for_port",
]
