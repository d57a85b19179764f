"""Sensor sources: where an agent's readings come from. Each is an iterator of reading dicts
(``device_id``, ``reading_ts`` ISO-8601, ``temperature_c``, ``door_open``); add one by adding a
factory to ``SOURCES``.

- ``simulated``: refrigeration units (fridge or freezer) with door openings and compressor faults
- ``csv:PATH``: a CSV file with those columns
- ``stdin``: JSON lines on standard input (pipe a real probe's driver into it)
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Reading = dict[str, Any]

READING_INTERVAL = dt.timedelta(minutes=15)  # the reference domain's cadence
SETPOINT_C = {"fridge": 3.0, "freezer": -19.0}


def simulated(
    units: list[tuple[str, str]],
    *,
    start: dt.datetime | None = None,
    seconds_per_reading: float = 1.0,
    seed: int | None = None,
    limit: int | None = None,
) -> Iterator[Reading]:
    """Readings of ``units`` [(unit id, "fridge"|"freezer")], one round every 15 simulated
    minutes, paced at ``seconds_per_reading`` real seconds per round (0: as fast as possible)."""
    rng = random.Random(seed)
    when = start or dt.datetime.now(dt.UTC).replace(tzinfo=None, second=0, microsecond=0)
    fault_left = {unit: 0 for unit, _ in units}
    produced = 0
    while limit is None or produced < limit:
        for unit, kind in units:
            if fault_left[unit] == 0 and rng.random() < 0.0006:  # about one fault in 17 days
                fault_left[unit] = rng.randint(8, 40)  # the compressor fails for 2 to 10 hours
            door = 8 <= when.hour < 21 and rng.random() < (0.10 if kind == "fridge" else 0.04)
            temperature = SETPOINT_C.get(kind, 3.0) + rng.gauss(0, 0.35) + (1.3 if door else 0.0)
            if fault_left[unit]:
                fault_left[unit] -= 1
                temperature += 7.0
            yield {
                "device_id": unit,
                "reading_ts": when.isoformat(),
                "temperature_c": round(temperature, 2),
                "door_open": door,
            }
            produced += 1
            if limit is not None and produced >= limit:
                return
        when += READING_INTERVAL
        if seconds_per_reading:
            time.sleep(seconds_per_reading)


def from_csv(path: Path) -> Iterator[Reading]:
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            yield {
                "device_id": row["device_id"],
                "reading_ts": row["reading_ts"],
                "temperature_c": float(row["temperature_c"]) if row.get("temperature_c") else None,
                "door_open": (row.get("door_open") or "").strip().lower() in ("1", "true", "yes"),
            }


def from_stdin() -> Iterator[Reading]:
    for line in sys.stdin:
        if line.strip():
            yield json.loads(line)


def parse_units(text: str) -> list[tuple[str, str]]:
    """``D-S001-1:fridge,D-S001-2:freezer`` -> [(unit, kind), ...]."""
    units = []
    for item in text.split(","):
        unit, _, kind = item.strip().partition(":")
        kind = kind or "fridge"
        if not unit or kind not in SETPOINT_C:
            raise ValueError(f"unit {item!r}: expected UNIT_ID[:fridge|freezer]")
        units.append((unit, kind))
    return units


SOURCES: dict[str, Callable[..., Iterator[Reading]]] = {
    "simulated": simulated,
    "csv": from_csv,
    "stdin": from_stdin,
}
