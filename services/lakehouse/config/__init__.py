"""Settings, the user's project and the platform's private local state: what every other part reads first."""

from __future__ import annotations

from ._local_state import (
    NESSIE_BUCKET,
    TRINO_OPERATOR,
    apply_stack_state,
    read_state,
    state_path,
    trino_login,
)
from ._private import (
    PRIVATE_UMASK,
    alive,
    private_dir,
    private_home,
    process_identity,
    read_json,
    recorded_alive,
    scratch_dir,
    write_private,
)
from ._project import PROJECT_ENV, Project, environment_project, find_project, project_of
from ._settings import (
    BrokerSettings,
    GatewaySettings,
    MaskingFormatter,
    Settings,
    SinkSettings,
    mask_secrets,
    parse_bytes,
)
from ._tls import ensure_local_tls

__all__ = [
    "NESSIE_BUCKET",
    "PRIVATE_UMASK",
    "PROJECT_ENV",
    "TRINO_OPERATOR",
    "BrokerSettings",
    "GatewaySettings",
    "MaskingFormatter",
    "Project",
    "Settings",
    "SinkSettings",
    "alive",
    "apply_stack_state",
    "ensure_local_tls",
    "environment_project",
    "find_project",
    "mask_secrets",
    "parse_bytes",
    "private_dir",
    "private_home",
    "process_identity",
    "project_of",
    "read_json",
    "read_state",
    "recorded_alive",
    "scratch_dir",
    "state_path",
    "trino_login",
    "write_private",
]
