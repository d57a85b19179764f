"""The example domain (a retailer with stores, products, customers and sensors) and the demo."""

from __future__ import annotations

from ._demo import KPI_QUERIES, run_demo
from ._domain import TABLES, generate, write_files
from ._produce import TOPICS, ensure_topics, produce

__all__ = [
    "KPI_QUERIES",
    "TABLES",
    "TOPICS",
    "ensure_topics",
    "generate",
    "produce",
    "run_demo",
    "write_files",
]
