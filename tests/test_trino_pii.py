"""The Trino plugin's ``pii_decrypt`` (services/trino-pii) and the Python keystore decrypt the
shared vectors (tests/vectors/pii_v1.json) alike: the same clear text, NULL for a forgotten
subject, an error for everything else; the plugin decrypts only for the users of its readers
file. And how ``lakehouse stack install`` builds the plugin."""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import os
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from lakehouse.errors import ArtifactUnavailable, ToolchainMissing
from lakehouse.local import _artifacts as artifacts
from lakehouse.privacy._keystore import REFRESH_SECONDS, Keystore

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO / "tests" / "vectors" / "pii_v1.json"
CACHE = artifacts.default_cache()  # as configured at collection (the fixtures clear LAKEHOUSE_*)


def _vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text())
    return data


@functools.cache
def _generator() -> Any:
    """tests/vectors/make_pii_vectors.py as a module (the vectors' own generator)."""
    spec = importlib.util.spec_from_file_location(
        "make_pii_vectors", VECTORS.with_name("make_pii_vectors.py")
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python_outcome(keystore: Keystore, ciphertext: str | None) -> dict[str, Any]:
    """What the platform's DuckDB ``pii_decrypt`` gives (query/_governed.py): KeyShredded is NULL;
    decided by the generator's own ``outcome``, so the file and this test cannot drift apart."""
    result: dict[str, Any] = _generator().outcome(keystore, ciphertext)
    return result


def _expected(vectors: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """phase -> case name -> outcome, as recorded (``fresh`` is a new keystore after the forget)."""
    return {
        phase: {case["name"]: case[key] for case in vectors["cases"]}
        for phase, key in (("before", "before_forget"), ("after", "after_forget"), ("fresh", "after_forget"))
    }


# --- the vectors and the Python keystore --------------------------------------------------------


@pytest.mark.unit
def test_the_vectors_cover_values_null_forgotten_and_errors() -> None:
    vectors = _vectors()
    expected = _expected(vectors)
    values = [v["value"] for v in expected["before"].values() if v["outcome"] == "value"]
    assert (
        "" in values
        and any(len(v) > 10_000 for v in values)
        and any(ord(c) > 0xFFFF for v in values for c in v)
    )
    plain = [c for c in vectors["cases"] if "/" in c["name"] and not c["name"].startswith("variant")]
    assert {c["ciphertext"].split(":")[3] for c in plain} == {"full_name", "email"}
    forgotten = [
        n
        for n, v in expected["after"].items()
        if v["outcome"] == "null" and expected["before"][n]["outcome"] == "value"
    ]
    assert forgotten, "no case of the forgotten subject"
    kinds = {v["outcome"] for phase in expected.values() for v in phase.values()}
    assert kinds == {"value", "null", "error"}
    variants = [n for n in expected["before"] if n.startswith("variant")]
    assert {expected["before"][n]["outcome"] for n in variants} == {"value", "error"}


@pytest.mark.unit
def test_the_python_keystore_decrypts_every_vector_as_recorded(tmp_path: Path) -> None:
    vectors = _vectors()
    master = base64.b64decode(vectors["master_key"])
    path = tmp_path / "keystore.json"
    path.write_text(vectors["keystore_before_forget"])
    now = [0.0]
    keystore = Keystore(path, master, clock=lambda: now[0])
    got: dict[str, dict[str, Any]] = {}
    got["before"] = {c["name"]: _python_outcome(keystore, c["ciphertext"]) for c in vectors["cases"]}
    replacement = tmp_path / "keystore.json.tmp"
    replacement.write_text(vectors["keystore"])
    os.replace(replacement, path)  # the forget, as another process writes it
    now[0] += REFRESH_SECONDS
    got["after"] = {c["name"]: _python_outcome(keystore, c["ciphertext"]) for c in vectors["cases"]}
    fresh = Keystore(path, master, clock=lambda: now[0])
    got["fresh"] = {c["name"]: _python_outcome(fresh, c["ciphertext"]) for c in vectors["cases"]}
    assert got == _expected(vectors)


@pytest.mark.unit
def test_regenerated_vectors_have_the_recorded_outcomes() -> None:
    """The generator, run now against the keystore as it is, decides every case as the committed
    file says (ciphertexts differ: nonces are random): the file is not stale."""
    fresh = _generator().build()

    def outcomes(vectors: dict[str, Any]) -> list[tuple[str, Any, Any]]:
        return [(c["name"], c["before_forget"], c["after_forget"]) for c in vectors["cases"]]

    assert outcomes(fresh) == outcomes(_vectors())


# --- the Java side ------------------------------------------------------------------------------


def _built_plugin() -> Path:
    """The plugin jar built from the sources as they are (cached by their digest); skips naming
    the missing toolchain."""
    try:
        folder, _ = artifacts.build_plugin(cache=CACHE)
    except ToolchainMissing as exc:
        pytest.skip(f"needs Maven and a Java {artifacts.PLUGIN_JAVA}+ JDK to build the Trino plugin: {exc}")
    return folder / artifacts.PLUGIN_JAR


@pytest.mark.integration
@pytest.mark.cluster
def test_the_trino_plugin_decrypts_every_vector_as_python_does() -> None:
    jar = _built_plugin()
    try:
        java = artifacts.find_java(artifacts.PLUGIN_JAVA, purpose="the trino-pii vector check")
    except ToolchainMissing as exc:
        pytest.skip(f"needs a Java {artifacts.PLUGIN_JAVA}+ runtime: {exc}")
    result = subprocess.run(
        [str(java.java), "-cp", str(jar), "io.lakehouse.trino.pii.VectorCheck", str(VECTORS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout)
    _check_readers(got.pop("readers"))
    errors = {
        phase: {name: outcome.pop("error") for name, outcome in cases.items() if "error" in outcome}
        for phase, cases in got.items()
    }
    assert got == _expected(_vectors())
    # Java's messages say what was wrong, and never quote the value (a look-alike may be plaintext)
    messages = errors["fresh"]
    assert messages["not-ciphertext"] == "not a value this keystore encrypted"
    assert messages["unknown-subject"] == "no data key for c-99"
    assert "does not decrypt: tampered" in messages["moved-field"]
    assert "is not base64" in messages["forgotten-bad-base64"]
    assert "not UTF-8" in messages["not-utf8"]
    assert not any("Ada Lovelace" in m for m in messages.values())


def _check_readers(got: dict[str, Any]) -> None:
    """The SQL function's core (``PiiGuard``) with a readers file naming carol: only carol gets
    clear text; the keystore is never reached for anyone else; a revoked, damaged, malformed or
    removed file refuses everyone (closed), naming LAKEHOUSE_PII_READERS_FILE."""
    case = next(c for c in _vectors()["cases"] if c["name"] == got.pop("case"))
    assert got.pop("keystore_reached_for_others") == 0
    clear = case["after_forget"]
    assert clear["outcome"] == "value"
    outcomes = {step: outcome["outcome"] for step, outcome in got.items()}
    assert outcomes == {
        "carol": "value",
        "dana": "denied",
        "dana_null": "denied",  # refused before anything, even a NULL
        "Carol": "denied",  # the session user, exactly
        "empty_user": "denied",
        "revoked": "denied",
        "damaged": "denied",
        "not_names": "denied",
        "restored": "value",
        "removed": "denied",
    }
    assert got["carol"]["value"] == got["restored"]["value"] == clear["value"]
    assert got["dana"]["error"] == "dana is not cleared to decrypt personal data"
    assert got["revoked"]["error"] == "carol is not cleared to decrypt personal data"
    for step in ("damaged", "not_names", "removed"):
        assert got[step]["error"].startswith("nobody may decrypt personal data: the readers file ")
        assert "(LAKEHOUSE_PII_READERS_FILE)" in got[step]["error"]
    assert not any(clear["value"] in o.get("error", "") for o in got.values())


@pytest.mark.integration
@pytest.mark.cluster
def test_the_plugin_jar_registers_its_plugin_and_bundles_nothing_else() -> None:
    with zipfile.ZipFile(_built_plugin()) as jar:
        service = jar.read("META-INF/services/io.trino.spi.Plugin").decode().strip()
        classes = [n for n in jar.namelist() if n.endswith(".class")]
    assert service == "io.lakehouse.trino.pii.PiiPlugin"
    assert classes and all(n.startswith("io/lakehouse/trino/pii/") for n in classes)


# --- the build in `lakehouse stack install` -----------------------------------------------------


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "trino-pii"
    (source / "src").mkdir(parents=True)
    (source / "pom.xml").write_text("<project/>")
    (source / "src" / "A.java").write_text("class A {}")
    return source


@pytest.mark.unit
def test_the_source_digest_follows_the_sources_and_ignores_build_output(tmp_path: Path) -> None:
    source = _source(tmp_path)
    digest = artifacts.source_digest(source)
    (source / "target").mkdir()
    (source / "target" / "trino-pii.jar").write_bytes(b"jar")
    (source / ".idea").mkdir()
    (source / ".idea" / "x.xml").write_text("x")
    assert artifacts.source_digest(source) == digest
    (source / "src" / "A.java").write_text("class A { }")
    assert artifacts.source_digest(source) != digest
    (source / "src" / "A.java").write_text("class A {}")
    (source / "src" / "A.java").rename(source / "src" / "B.java")
    assert artifacts.source_digest(source) != digest


@pytest.mark.unit
def test_a_built_plugin_is_reused_without_maven_and_rebuilt_when_changed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source, cache = _source(tmp_path), tmp_path / "cache"
    digest = artifacts.source_digest(source)
    folder = artifacts.plugin_dir(cache, digest)
    folder.mkdir(parents=True)
    jar = folder / artifacts.PLUGIN_JAR
    jar.write_bytes(b"PK built")
    jar.with_name(jar.name + ".verified").write_text(
        json.dumps({"source": digest, "sha256": artifacts._digests(jar)["sha256"]})
    )
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no mvn: none needed
    assert artifacts.build_plugin(cache=cache, source=source) == (folder, False)
    jar.write_bytes(b"PK changed")  # no longer what was built: a build is needed, and Maven for it
    with pytest.raises(
        ToolchainMissing, match=r"no `mvn` is on PATH: install Maven \(Debian: `apt-get install maven`\)"
    ):
        artifacts.build_plugin(cache=cache, source=source)


@pytest.mark.unit
def test_install_names_missing_maven_for_trino_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    trino = artifacts.Artifact(
        name="trino-cli",
        kind="maven",
        service="trino",
        version="476",
        path="x.jar",
        sha256="0",
        size=1,
        role="tool",
    )
    missing = artifacts.toolchains_needed([trino], cache=tmp_path / "cache")
    assert any(m.startswith("Maven (`mvn`, to build the trino-pii plugin") for m in missing), missing
    lock = artifacts.Lock(tmp_path / "lock.json", (trino,))
    with pytest.raises(ToolchainMissing) as raised:
        artifacts.install(lock=lock, cache=tmp_path / "cache", repository="file:///nowhere")
    assert "\n" not in str(raised.value) and "Maven" in str(raised.value)


@pytest.mark.unit
def test_layouts_want_the_plugin_built_from_the_current_sources(tmp_path: Path) -> None:
    real = artifacts.load_lock(REPO / "infra" / "artifacts.lock.json")
    lock = artifacts.Lock(real.path, (real.by_name()["trino-server"],))
    with pytest.raises(
        ArtifactUnavailable, match=r"trino-pii \(built from services/trino-pii as it is now\)"
    ):
        artifacts.layouts(lock=lock, cache=tmp_path / "empty")
