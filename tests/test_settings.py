from __future__ import annotations

from pathlib import Path

import pytest

from lakehouse import ConfigurationError, Settings


def test_local_profile_keeps_all_state_under_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "h")
    assert settings.profile == "local"
    assert settings.catalog.type == "sql"
    assert settings.catalog.uri == f"sqlite:///{tmp_path / 'h' / 'catalog.db'}"
    assert settings.catalog.warehouse == (tmp_path / "h" / "warehouse").as_uri()
    assert settings.storage.type == "file"
    assert settings.engine.type == "duckdb"


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


def test_profiles_pick_their_backends() -> None:
    stack = Settings(profile="stack")
    assert (stack.catalog.type, stack.storage.type, stack.storage.sse) == ("rest", "s3", "AES256")
    cluster = Settings(profile="cluster")
    assert (cluster.catalog.type, cluster.engine.type) == ("rest", "trino")
    assert cluster.catalog.uri == "http://nessie:19120/iceberg"
    assert cluster.storage.sse == "aws:kms"


@pytest.mark.parametrize("weak", ["minioadmin", "changeme", "password"])
def test_cluster_refuses_default_secrets(monkeypatch: pytest.MonkeyPatch, weak: str) -> None:
    monkeypatch.setenv("LAKEHOUSE_PROFILE", "cluster")
    monkeypatch.setenv("LAKEHOUSE_STORAGE__SECRET_ACCESS_KEY", weak)
    with pytest.raises(ConfigurationError, match=r"storage.secret_access_key is a well-known default"):
        Settings()


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


def test_the_master_key_comes_from_a_secret_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import base64
    import os

    from lakehouse._keystore import open_keystore

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


def test_the_cluster_profile_never_generates_a_master_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lakehouse._keystore import open_keystore

    monkeypatch.setenv("LAKEHOUSE_SECRETS_DIR", str(tmp_path / "none"))
    with pytest.raises(ConfigurationError, match=r"keys\.master_key"):
        open_keystore(Settings.load(profile="cluster", home=tmp_path / "home"))
