from __future__ import annotations

import json
from pathlib import Path

import pytest

from lakehouse import ConfigurationError, Settings

from .conftest import run_cli


@pytest.mark.unit
def test_local_profile_keeps_all_state_under_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "h")
    assert settings.profile == "local"
    assert settings.catalog.type == "sql"
    assert settings.catalog.uri == f"sqlite:///{tmp_path / 'h' / 'catalog.db'}"
    assert settings.catalog.warehouse == (tmp_path / "h" / "warehouse").as_uri()
    assert settings.storage.type == "file"
    assert settings.engine.type == "duckdb"


@pytest.mark.unit
def test_home_and_nested_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("LAKEHOUSE_CATALOG__URI", "postgresql+psycopg2://lake@db/catalog")
    monkeypatch.setenv("LAKEHOUSE_ENGINE__THREADS", "8")
    settings = Settings()
    assert settings.home == tmp_path / "elsewhere"
    assert settings.catalog.uri == "postgresql+psycopg2://lake@db/catalog"
    assert settings.engine.threads == 8


@pytest.mark.unit
def test_profiles_pick_their_backends() -> None:
    stack = Settings(profile="stack")
    assert (stack.catalog.type, stack.storage.type, stack.storage.sse) == ("rest", "s3", "AES256")
    cluster = Settings(profile="cluster")
    assert (cluster.catalog.type, cluster.engine.type) == ("rest", "trino")
    assert cluster.catalog.uri == "http://nessie:19120/iceberg"
    assert cluster.storage.sse == "aws:kms"


@pytest.mark.unit
@pytest.mark.parametrize("weak", ["minioadmin", "changeme", "password"])
def test_cluster_refuses_default_secrets(monkeypatch: pytest.MonkeyPatch, weak: str) -> None:
    monkeypatch.setenv("LAKEHOUSE_PROFILE", "cluster")
    monkeypatch.setenv("LAKEHOUSE_STORAGE__SECRET_ACCESS_KEY", weak)
    with pytest.raises(ConfigurationError, match=r"storage.secret_access_key is a well-known default"):
        Settings()


@pytest.mark.unit
def test_secrets_come_from_a_secrets_directory_and_never_print(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "lakehouse_storage").write_text('{"secret_access_key": "s3cr3t-from-a-file-9d8f"}')
    monkeypatch.setenv("LAKEHOUSE_SECRETS_DIR", str(secrets))
    settings = Settings.load()
    assert settings.storage.secret_access_key is not None
    assert settings.storage.secret_access_key.get_secret_value() == "s3cr3t-from-a-file-9d8f"
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in settings.model_dump_json()


@pytest.mark.unit
def test_the_master_key_comes_from_a_secret_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import base64
    import os

    from lakehouse.privacy import open_keystore

    key = base64.b64encode(os.urandom(32)).decode()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "lakehouse_keys__master_key").write_text(key)
    monkeypatch.setenv("LAKEHOUSE_SECRETS_DIR", str(secrets))
    settings = Settings.load(profile="cluster", home=tmp_path / "home")
    assert settings.keys.master_key is not None and settings.keys.master_key.get_secret_value() == key
    assert key not in settings.model_dump_json()
    sealed = open_keystore(settings).encrypt("C1", "email", "a@example.com")
    assert open_keystore(settings).decrypt(sealed) == "a@example.com"
    assert not (tmp_path / "home" / "state" / "keys" / "master.key").exists()  # nothing generated


@pytest.mark.unit
def test_the_cluster_profile_never_generates_a_master_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lakehouse.privacy import open_keystore

    monkeypatch.setenv("LAKEHOUSE_SECRETS_DIR", str(tmp_path / "none"))
    with pytest.raises(ConfigurationError, match=r"keys\.master_key"):
        open_keystore(Settings.load(profile="cluster", home=tmp_path / "home"))


def _password_variants() -> list[tuple[str, str]]:
    """(setting value, the secret in it): schemes x users x passwords with the characters that
    break naive parsing, in the userinfo, in query strings and in libpq key=value strings."""
    import random
    import string
    from urllib.parse import quote

    rng = random.Random(9)
    schemes = ["postgresql", "postgresql+psycopg", "mysql+pymysql", "https", "s3", "redis", "kafka+sasl", ""]
    users = ["u", "svc.lakehouse", "u%40corp", "", "ünï"]
    specials = ["@", ":", "/", "?", "#", "%40", "&", "=", "!", "ü", "'", "@@", "/:?#@"]
    variants = []
    for i in range(60):
        core = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(10))
        secret = rng.choice(specials) + core + rng.choice(specials)
        scheme = rng.choice(schemes)
        start = f"{scheme}://" if scheme else "//"
        user = rng.choice(users)
        host = rng.choice(["db.internal:5432/lakehouse", "127.0.0.1/x", "[::1]:6379", "h"])
        kind = i % 4
        if kind == 0:
            variants.append((f"{start}{user}:{secret}@{host}", secret))
        elif kind == 1:  # percent-encoded, as a careful user writes it
            variants.append((f"{start}{user}:{quote(secret, safe='')}@{host}?sslmode=require", secret))
        elif kind == 2:
            name = rng.choice(["password", "sslpassword", "Password", "token", "secret", "api_key"])
            sep = rng.choice(["?", "&", ";"])
            variants.append((f"{start}{host}?x=1{sep if sep != '?' else '&'}{name}={core}&y=2", core))
        else:  # libpq key=value
            variants.append((f"host=h user={user or 'u'} password='{core} {core}' dbname=x", core))
    return variants


@pytest.mark.unit
@pytest.mark.parametrize(("value", "secret"), _password_variants())
def test_no_password_is_printed_from_settings(
    monkeypatch: pytest.MonkeyPatch, value: str, secret: str
) -> None:
    from urllib.parse import quote

    monkeypatch.setenv("LAKEHOUSE_CATALOG__URI", value)
    monkeypatch.setenv("LAKEHOUSE_STORAGE__ENDPOINT", value)
    settings = Settings.load()
    shown = [json.dumps(settings.display()), repr(settings), str(settings)]
    forms = {secret, quote(secret, safe=""), secret.strip("@:/?#&='!")}
    for text in shown:
        leaked = [f for f in forms if len(f) >= 4 and f in text]
        assert leaked == [], text
        assert "***" in text
    # in a sentence (an error message, a log line) too
    from lakehouse.config import mask_secrets

    sentence = f"could not reach the catalog at {value}: connection refused"
    assert all(f not in mask_secrets(sentence, settings.secret_values()) for f in forms if len(f) >= 4)


@pytest.mark.integration
def test_lakehouse_settings_and_its_errors_mask_passwords(tmp_path: Path) -> None:
    secret = "Zq8!pw@ss/word"
    url = f"postgresql://lake:{secret}@db.internal:5432/lakehouse?sslpassword=Kx9secondpw"
    result = run_cli("settings", home=tmp_path / "home", env={"LAKEHOUSE_CATALOG__URI": url})
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["catalog"]["uri"] == "postgresql://lake:***@db.internal:5432/lakehouse?sslpassword=***"
    # a catalog URL that fails: the error quotes the URL, never the password
    broken = {
        "LAKEHOUSE_CATALOG__TYPE": "rest",
        "LAKEHOUSE_CATALOG__URI": f"postgresql://lake:{secret}@h:1/db",
    }
    result = run_cli("tables", home=tmp_path / "home", env=broken)
    assert result.returncode == 1
    assert secret not in result.stdout + result.stderr and "Kx9secondpw" not in result.stdout
    assert "lake:***@" in result.stderr


@pytest.mark.unit
def test_every_exception_the_platform_defines_is_in_errors_under_one_root_and_exported() -> None:
    import importlib
    import inspect
    import pkgutil

    import lakehouse
    from lakehouse.errors import LakehouseError

    # an HTTP answer the gateway raises inside a request handler, turned into problem+json there
    control_flow = {"lakehouse.ingest.edge._app.Problem"}
    found = {}
    for module in pkgutil.walk_packages(lakehouse.__path__, "lakehouse."):
        if module.name.endswith("dbt_plugin"):
            continue  # imported by dbt itself; its classes are not exceptions
        for _, cls in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__.startswith("lakehouse."):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    defined = {name: cls for name, cls in found.items() if name not in control_flow}
    assert len(defined) >= 20
    assert {n for n, c in defined.items() if c.__module__ != "lakehouse.errors"} == set()
    assert {n for n, c in defined.items() if not issubclass(c, LakehouseError)} == set()
    assert {c.__name__ for c in defined.values()} <= set(lakehouse.__all__)
