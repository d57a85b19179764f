"""Personal data on the stack's Trino: the compiled policy's mask `pii_decrypt(<column>)` runs the
trino-pii plugin, which decrypts with the platform's keystore. A cleared user (carol) reads clear
text equal to what was loaded; a user without bronze (dana) is refused; once `lakehouse gdpr
forget` destroyed a customer's data key, a copy of that customer's ciphertext decrypts to NULL on
Trino within about two seconds. The function decrypts for the policy's readers alone: whoever
else calls it on a ciphertext they hold, in whatever shape of query, gets no clear text.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakehouse import Lakehouse, Settings
from lakehouse.config import TRINO_OPERATOR, read_state
from lakehouse.errors import AccessDenied, LakehouseError
from lakehouse.local._trino import CATALOG

from .conftest import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
STACK = {"LAKEHOUSE_PROFILE": "stack", "LAKEHOUSE_PROJECT_DIR": str(REPO)}


@dataclass(frozen=True)
class Loaded:
    home: Path
    names: dict[str, str]  # customer_id -> full_name as loaded


def _settings(home: Path) -> Settings:
    return Settings(profile="stack", home=home, project_dir=REPO)


def _customers(ids: list[str], names: list[str]) -> pa.Table:
    now = dt.datetime(2026, 1, 1, 12, 0)
    return pa.table(
        {
            "customer_id": ids,
            "full_name": names,
            "email": [f"{i}@example.com" for i in ids],
            "phone": ["+49 30 1234567"] * len(ids),
            "birth_date": [dt.date(1990, 5, 17)] * len(ids),
            "street": ["Hauptstraße 1"] * len(ids),
            "city": ["Köln"] * len(ids),
            "postal_code": ["50667"] * len(ids),
            "home_store_id": ["S001"] * len(ids),
            "updated_at": pa.array([now] * len(ids), pa.timestamp("us")),
        }
    )


@pytest.fixture(scope="module")
def loaded(cluster_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """A few customers of this module's own (unique ids: the session's stack is shared) loaded
    into bronze.customers through the platform, encrypted per customer as the contract says."""
    tag = secrets.token_hex(3)
    names = {
        f"pii-trino-{tag}-1": "Ada Lovelace",
        f"pii-trino-{tag}-2": "Zoë Ñandú 李小龙",
        f"pii-trino-{tag}-3": "Grace Hopper",
    }
    path = tmp_path_factory.mktemp("pii-trino") / "customers.parquet"
    pq.write_table(_customers(list(names), list(names.values())), path)
    with Lakehouse(_settings(cluster_home)) as lh:
        assert lh.load("bronze.customers", [path]).rows == len(names)
    yield Loaded(cluster_home, names)


def _full_names(home: Path, user: str, ids: list[str]) -> dict[str, str | None]:
    listed = ", ".join(f"'{i}'" for i in ids)
    with Lakehouse(_settings(home), user=user) as lh:
        table = lh.sql(f"select customer_id, full_name from bronze.customers where customer_id in ({listed})")
    return dict(
        zip(table.column("customer_id").to_pylist(), table.column("full_name").to_pylist(), strict=True)
    )


def test_a_cleared_user_reads_clear_text_on_trino(loaded: Loaded) -> None:
    with Lakehouse(_settings(loaded.home)) as lh:
        assert lh.settings.engine.type == "trino"
    assert _full_names(loaded.home, "carol", list(loaded.names)) == loaded.names


def test_the_stored_value_is_ciphertext_and_other_users_do_not_read_bronze(loaded: Loaded) -> None:
    stored = _stored(loaded.home, list(loaded.names))  # the operator reads data as stored
    assert sorted(stored) == sorted(loaded.names)
    assert all(v.startswith(f"pii:v1:{k}:full_name:") for k, v in stored.items())
    with pytest.raises(AccessDenied):
        _full_names(loaded.home, "dana", list(loaded.names))


def _stored(home: Path, ids: list[str]) -> dict[str, str]:
    """customer_id -> full_name as stored (ciphertext): what the operator reads."""
    listed = ", ".join(f"'{i}'" for i in ids)
    with Lakehouse(_settings(home)) as operator:
        table = operator.sql(
            f"select customer_id, full_name from bronze.customers where customer_id in ({listed})"
        )
    return dict(
        zip(table.column("customer_id").to_pylist(), table.column("full_name").to_pylist(), strict=True)
    )


def _decrypt_as(home: Path, user: str, ciphertext: str) -> str | None:
    with Lakehouse(_settings(home), user=user) as lh:
        value: str | None = lh.sql(f"select pii_decrypt('{ciphertext}')").column(0)[0].as_py()
    return value


def test_a_forgotten_customer_is_null_on_trino_within_two_seconds(loaded: Loaded) -> None:
    """`gdpr forget` deletes the rows and expires the snapshots that held them; a copy of the
    ciphertext kept elsewhere (an export, a backup) decrypts to NULL on Trino within ~2 s."""
    forgotten, *kept = sorted(loaded.names)
    copies = _stored(loaded.home, list(loaded.names))
    assert _decrypt_as(loaded.home, "carol", copies[forgotten]) == loaded.names[forgotten]  # key now cached
    result = run_cli("gdpr", "forget", forgotten, home=loaded.home, env=STACK)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    forgot_at = time.monotonic()
    while (value := _decrypt_as(loaded.home, "carol", copies[forgotten])) is not None:
        assert value == loaded.names[forgotten]
        waited = time.monotonic() - forgot_at
        assert waited < 2.0, f"still decrypted {waited:.1f} s after the forget"
        time.sleep(0.1)
    assert _full_names(loaded.home, "carol", list(loaded.names)) == {k: loaded.names[k] for k in kept}
    assert _decrypt_as(loaded.home, "carol", copies[kept[0]]) == loaded.names[kept[0]]


def test_pii_decrypt_of_a_value_that_is_not_ciphertext_fails_the_query(loaded: Loaded) -> None:
    with (
        Lakehouse(_settings(loaded.home), user="carol") as lh,
        pytest.raises(LakehouseError, match="pii_decrypt: not a value this keystore encrypted"),
    ):
        lh.sql("select pii_decrypt('Ada Lovelace')")


# --- calling the function directly ------------------------------------------------------------
# Trino checks no access on a plugin's functions: pii_decrypt decides itself, by the session user,
# from the compiled policy's readers (trino/pii_readers.json). Each shape a query can take to reach
# it: carol (a reader) gets clear text through every one (so each shape does call the function),
# every other user gets an error or NULL, never the clear text.

VARIANTS = {
    "direct": "select pii_decrypt({c})",
    "qualified": "select system.builtin.pii_decrypt({c})",
    "subquery": "select v from (select pii_decrypt({c}) as v)",
    "cte": "with t as (select pii_decrypt({c}) as v) select v from t",
    "with-lateral": (
        "with t(c) as (values {c}) select v from t cross join lateral (select pii_decrypt(t.c) as v)"
    ),
    "cast": "select cast(pii_decrypt(cast({c} as varchar(4000))) as varchar(200))",
    "transform": "select element_at(transform(array[{c}], x -> pii_decrypt(x)), 1)",
    "try": "select try(pii_decrypt({c}))",
    "coalesce": "select coalesce(pii_decrypt({c}), 'none')",
    "inline-function": "with function f(x varchar) returns varchar return pii_decrypt(x) select f({c})",
}
UNCLEARED = ("dana", "sam", "alice", "svc-ml")


@pytest.fixture(scope="module")
def ciphertext(loaded: Loaded) -> tuple[str, str]:
    """(a stored ciphertext, its clear text), as the operator reads it."""
    last = max(loaded.names)
    return _stored(loaded.home, [last])[last], loaded.names[last]


def _run_as(home: Path, user: str, sql: str) -> str | None:
    """The first value ``sql`` gives ``user``, or ``refused: <error>`` if the query fails."""
    try:
        with Lakehouse(_settings(home), user=user) as lh:
            value: str | None = lh.sql(sql).column(0)[0].as_py()
    except LakehouseError as exc:
        return f"refused: {exc}"
    return value


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_cleared_user_decrypts_through_every_shape_of_query(
    loaded: Loaded, ciphertext: tuple[str, str], variant: str
) -> None:
    value, clear = ciphertext
    assert _run_as(loaded.home, "carol", VARIANTS[variant].format(c=_literal(value))) == clear


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("user", UNCLEARED)
def test_a_user_without_clearance_cannot_decrypt_a_ciphertext_by_calling_the_function(
    loaded: Loaded, ciphertext: tuple[str, str], user: str, variant: str
) -> None:
    value, clear = ciphertext
    got = _run_as(loaded.home, user, VARIANTS[variant].format(c=_literal(value)))
    assert got is not None and got.startswith("refused: "), f"{user} was not refused: {got!r}"
    assert clear not in got, f"{user} got the clear text: {got!r}"
    assert f"pii_decrypt: {user} is not cleared to decrypt personal data" in got  # not a syntax error


def _impersonating(home: Path, user: str, sql: str) -> str | None:
    """The first value ``sql`` gives when the operator account authenticates and the session
    runs as ``user`` (Trino impersonation, which the policy allows the operator alone)."""
    import trino

    from lakehouse.query import connect, https_session

    trino_record = (read_state(_settings(home)) or {})["services"]["trino"]
    principal = TRINO_OPERATOR
    password = json.loads(Path(trino_record["files"]["passwords"]).read_text())[principal]
    http = https_session(trino_record["files"]["ca"])
    connection = connect(
        trino_record["endpoints"]["https"],
        user=user,
        principal=principal,
        password=password,
        session=http,
        catalog=CATALOG,
    )
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        rows = cursor.fetchall()
    except trino.exceptions.TrinoUserError as exc:
        return f"refused: {exc.error_name}: {exc.message}"
    finally:
        connection.close()
        http.close()
    value: str | None = rows[0][0]
    return value


def test_the_session_user_decides_not_the_account_that_authenticated(
    loaded: Loaded, ciphertext: tuple[str, str]
) -> None:
    """The operator (no reader: it reads data as stored) is refused; impersonating carol it gets
    clear text, impersonating dana it is refused as dana: the user queries run as decides."""
    value, clear = ciphertext
    sql = f"select pii_decrypt({_literal(value)})"
    operator = _impersonating(loaded.home, TRINO_OPERATOR, sql)
    assert operator == (
        f"refused: PERMISSION_DENIED: pii_decrypt: {TRINO_OPERATOR} is not cleared to decrypt personal data"
    )
    assert _impersonating(loaded.home, "carol", sql) == clear
    as_dana = _impersonating(loaded.home, "dana", sql)
    assert as_dana == "refused: PERMISSION_DENIED: pii_decrypt: dana is not cleared to decrypt personal data"
    # through the mask, as carol: the session user inside a column mask is still the querying user
    [customer] = [k for k, v in loaded.names.items() if v == clear]
    masked = f"select full_name from bronze.customers where customer_id = {_literal(customer)}"
    assert _impersonating(loaded.home, "carol", masked) == clear
