"""Personal-data encryption benchmark, each side measured in the same run.

- Ingest: ``lakehouse load`` of the customers file into ``bronze.customers`` (normalise,
  encrypt four columns per row under per-customer keys, tokens) against loading the same file
  into a plain table created from it (no personal-data handling).
- Query: a cleared user reading every customer's email decrypted (``pii_decrypt`` per value)
  against a user who sees the token instead, both through the governed engine (a new session
  each run: the same copy of the granted rows, parsing and audit), so the ratio is the
  decryption itself.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from lakehouse import Lakehouse, Settings


def bench_pii(work: Path, customers_file: Path, built_home: Path, runs: int = 7) -> dict[str, Any]:
    encrypted_s, plain_s = [], []
    rows = 0
    for i in range(3):
        home = work / f"pii-{i}"
        with Lakehouse(Settings(home=home)) as lh:
            lh.keystore  # noqa: B018 (create the keystore outside the timing)
            started = time.perf_counter()
            rows = lh.load("bronze.customers", [customers_file]).rows
            encrypted_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            lh.load("silver.customers_plain", [customers_file], create=True)
            plain_s.append(time.perf_counter() - started)
        shutil.rmtree(home)

    def timed(user: str, query: str) -> list[float]:
        """A new session per run: the granted rows are copied (and, for a cleared user,
        decrypted) into it each time, which is the cost being compared."""
        samples = []
        for _ in range(runs):
            with Lakehouse(Settings(home=built_home), user=user) as lh:
                started = time.perf_counter()
                lh.sql(query)
                samples.append(time.perf_counter() - started)
        return samples

    query = "select customer_id, email from gold.dim_customer"
    decrypting = timed("carol", query)
    masked = timed("dana", query)
    with Lakehouse(Settings(home=built_home)) as lh:
        values = lh.sql("select count(email) from gold.dim_customer").column(0)[0].as_py()
    return {
        "customers": rows,
        "encrypted_load_rows_per_s": rows / statistics.median(encrypted_s),
        "plain_load_rows_per_s": rows / statistics.median(plain_s),
        "ingest_ratio": statistics.median(plain_s) / statistics.median(encrypted_s),
        "emails": values,
        "decrypting_query_ms": 1000 * statistics.median(decrypting),
        "masked_query_ms": 1000 * statistics.median(masked),
        "query_ratio": statistics.median(masked) / statistics.median(decrypting),
    }
