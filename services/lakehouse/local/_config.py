"""Service configuration files rendered from the templates the Helm chart renders too.

The templates live once, in ``charts/lakehouse/files/config/`` (this package reaches them as
``config_templates/``, a link into the chart). A template is the service's own file format with
``{{ name }}`` placeholders and nothing else: no logic, so that Go's ``replace`` in the chart
(``lakehouse.renderConfig`` in ``charts/lakehouse/templates/_config.tpl``) and ``render_config``
here produce the same bytes from the same values; ``tests/test_config_templates.py`` renders both
and compares. Secrets are never values: the templates reference them as the service's own
environment expressions (``${NAME}`` for Quarkus, ``${ENV:NAME}`` for Trino), filled from the
process's environment here and from Secrets in the cluster.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from lakehouse.config import write_private
from lakehouse.errors import ServerError

TEMPLATES = Path(__file__).parent / "config_templates"


PLACEHOLDER = re.compile(r"\{\{ ([a-z][a-z0-9_]*) \}\}")


def template(name: str) -> str:
    """The text of the template ``name`` (e.g. ``nessie/application.properties``)."""
    path = TEMPLATES / name
    try:
        return path.read_text()
    except OSError as exc:
        raise ServerError(
            f"no configuration template {name} in {TEMPLATES} (the chart's files/config): {exc.strerror}"
        ) from exc


def placeholders(name: str) -> set[str]:
    return set(PLACEHOLDER.findall(template(name)))


def render_config(name: str, values: Mapping[str, str]) -> str:
    """The template ``name`` with each ``{{ key }}`` replaced by ``values[key]``. Every
    placeholder must have a value and every value a placeholder (a typo fails here, not in the
    service); a value holding a line break or a backslash is refused (it would change the
    file's structure)."""
    wanted = placeholders(name)
    missing, unused = sorted(wanted - set(values)), sorted(set(values) - wanted)
    if missing or unused:
        raise ServerError(
            f"the values for {name} do not match its placeholders: "
            + "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"not in the template {', '.join(unused)}" if unused else "",
                )
                if part
            )
        )
    empty = sorted(key for key, value in values.items() if not value)
    if empty:
        raise ServerError(f"values for {name} are empty: {', '.join(empty)}")
    bad = sorted(key for key, value in values.items() if any(c in value for c in "\n\r\\"))
    if bad:
        raise ServerError(f"values for {name} hold a line break or a backslash: {', '.join(bad)}")
    return PLACEHOLDER.sub(lambda match: values[match[1]], template(name))


def write_config(path: Path, name: str, values: Mapping[str, str]) -> Path:
    """Render ``name`` into ``path`` (0600), and the values next to it (``<path>.values.json``),
    so that the chart's rendering of the same values can be compared with what ran."""
    path.unlink(missing_ok=True)
    write_private(path, render_config(name, values))
    values_file = path.with_name(path.name + ".values.json")
    values_file.unlink(missing_ok=True)
    write_private(
        values_file, json.dumps({"template": name, "values": dict(values)}, indent=2, sort_keys=True)
    )
    return path
