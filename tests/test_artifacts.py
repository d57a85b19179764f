"""Pinned server artifacts: the lock is well-formed; the fetcher verifies before caching, refuses
what is not the locked file (naming it and both digests, leaving nothing behind), bounds size
and time, and reuses a verified file offline; the JDK, the repository and the cache are found
as documented. A loopback HTTP server in a thread plays the repository.

The tests at the end need the real artifacts (about 1.2 GB) and run only when `lakehouse stack
install` has put them in the cache."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import tarfile
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lakehouse.errors import ArtifactError, ArtifactMismatch, ArtifactUnavailable, ToolchainMissing
from lakehouse.local import _artifacts as artifacts
from lakehouse.local._artifacts import Artifact, Lock
from tests.conftest import REPO, run_cli

LOCK_FILE = REPO / "infra" / "artifacts.lock.json"
FAKE_PATH = "org/example/fake-server/1.0/fake-server-1.0.jar"
PAYLOAD = bytes((i * 7 + i // 251) % 256 for i in range(3 * artifacts.CHUNK // 2))  # 1.5 chunks


class _Repository(http.server.ThreadingHTTPServer):
    """Serves ``files`` (path -> bytes); paths in ``no_length`` go without Content-Length,
    ``stall`` paths answer only after ``stall`` seconds; ``hits`` counts GET requests."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.no_length: set[str] = set()
        self.stall: dict[str, float] = {}
        self.hits = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/maven2"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Repository

    def do_GET(self) -> None:
        self.server.hits += 1
        path = urllib.parse.urlparse(self.path).path.removeprefix("/maven2/")
        time.sleep(self.server.stall.get(path, 0))
        body = self.server.files.get(path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        if path in self.server.no_length:
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client stopped reading
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def repository() -> Iterator[_Repository]:
    server = _Repository()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _artifact(body: bytes = PAYLOAD, **changes: object) -> Artifact:
    fake = Artifact(
        name="fake-server",
        kind="maven",
        service="fake",
        version="1.0",
        path=FAKE_PATH,
        sha256=hashlib.sha256(body).hexdigest(),
        size=len(body),
        sha1=hashlib.sha1(body).hexdigest(),  # noqa: S324 - Maven's checksum
        coordinates="org.example:fake-server:1.0",
    )
    return replace(fake, **changes)  # type: ignore[arg-type]


def _files(cache: Path) -> list[Path]:
    return sorted(artifacts.iter_cache_files(cache))


# --- the lock file -----------------------------------------------------------------------------


@pytest.mark.unit
def test_lock_file_is_well_formed() -> None:
    data = json.loads(LOCK_FILE.read_text())
    assert data["format"] == artifacts.LOCK_FORMAT
    entries = data["artifacts"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), "duplicate names"
    base = "https://repository.invalid/base/"
    for entry in entries:
        where = entry["name"]
        assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), where
        assert isinstance(entry["size"], int) and entry["size"] > 0, where
        assert entry["version"], where
        assert entry["needed_by"], where
        assert entry["role"] in {"server", "classpath", "tool"}, where
        path = entry["path"]
        assert not path.startswith("/") and "://" not in path and "\\" not in path, where
        assert ".." not in Path(path).parts and "." not in Path(path).parts, where
        assert urllib.parse.urljoin(base, path).startswith(base), where
        if entry["kind"] == "maven":
            assert artifacts.maven_path(entry["coordinates"]) == path, where
            assert entry["coordinates"].split(":")[2] == entry["version"], where
            assert re.fullmatch(r"[0-9a-f]{40}", entry["sha1"]), where
            assert "sha512" not in entry or re.fullmatch(r"[0-9a-f]{128}", entry["sha512"]), where
        else:
            assert entry["kind"] == "go", where
            assert path == f"{entry['module']}/@v/{entry['version']}.zip", where
            assert re.fullmatch(r"h1:[A-Za-z0-9+/]{43}=", entry["h1"]), where
            assert re.fullmatch(r"h1:[A-Za-z0-9+/]{43}=", entry["go_mod_h1"]), where
            assert re.fullmatch(r"v\d+\.\d+\.\d+", entry["version"]), where
    lock = artifacts.load_lock(LOCK_FILE)
    for service in lock.services():
        servers = [a for a in lock.artifacts if a.service == service and a.role == "server"]
        # a service the stack runs has one server; helm is a tool alone (the chart's checks)
        assert len(servers) == (0 if service == "helm" else 1), service
    assert set(lock.services()) == {"helm", "kafka", "nessie", "opa", "trino"}
    assert by_name_tool(lock, "helm").package == "helm.sh/helm/v3/cmd/helm"
    by_name = lock.by_name()
    assert by_name["trino-server"].java is not None and by_name["trino-server"].java >= 24
    assert by_name["nessie"].java is not None and by_name["nessie"].java >= 21
    assert {"iceberg", "opa"} <= set((by_name["trino-server"].unpack or {})["plugins"])


def by_name_tool(lock: Lock, name: str) -> artifacts.Artifact:
    tool = lock.by_name()[name]
    assert tool.kind == "go" and tool.role == "tool" and tool.binary == name
    return tool


@pytest.mark.unit
def test_a_tool_is_not_a_stack_service_and_says_how_to_build_it(tmp_path: Path) -> None:
    lock = artifacts.load_lock(LOCK_FILE)
    with pytest.raises(ArtifactUnavailable, match=r"helm v3\.22\.0 is not built .*stack install --only helm"):
        artifacts.go_tool("helm", lock=lock, cache=tmp_path / "empty")
    with pytest.raises(ArtifactUnavailable) as missing:
        artifacts.layouts(lock=lock, cache=tmp_path / "empty")
    assert "helm" not in str(missing.value)  # the stack does not wait for the chart's tool


@pytest.mark.unit
def test_selecting_by_service_or_name_and_refusing_unknown_names() -> None:
    lock = artifacts.load_lock(LOCK_FILE)
    kafka = lock.select(["kafka"])
    assert len(kafka) > 10 and {a.service for a in kafka} == {"kafka"}
    assert [a.name for a in lock.select(["trino-cli", "opa"])] == ["trino-cli", "opa"]
    with pytest.raises(
        ArtifactError, match=r"not in the lock: spark .*services: helm, kafka, nessie, opa, trino"
    ):
        lock.select(["trino", "spark"])


@pytest.mark.unit
@pytest.mark.parametrize(
    ("coordinates", "path"),
    [
        ("io.trino:trino-jdbc:476", "io/trino/trino-jdbc/476/trino-jdbc-476.jar"),
        ("io.trino:trino-server:476:tar.gz", "io/trino/trino-server/476/trino-server-476.tar.gz"),
        ("io.trino:trino-cli:476:jar:executable", "io/trino/trino-cli/476/trino-cli-476-executable.jar"),
    ],
)
def test_maven_paths(coordinates: str, path: str) -> None:
    assert artifacts.maven_path(coordinates) == path


# --- fetch and verify --------------------------------------------------------------------------


@pytest.mark.unit
def test_a_good_artifact_is_verified_cached_and_then_reused_without_a_request(
    repository: _Repository, tmp_path: Path
) -> None:
    repository.files[FAKE_PATH] = PAYLOAD
    fake, cache = _artifact(), tmp_path / "cache"
    seen: list[int] = []
    path, fresh = artifacts.fetch(
        fake, cache=cache, repository=repository.base, progress=lambda a, n: seen.append(n)
    )
    assert fresh and path.read_bytes() == PAYLOAD
    assert path == cache / "maven" / FAKE_PATH
    assert seen[-1] == len(PAYLOAD) and len(seen) >= 2
    assert _files(cache) == [path, path.with_name(path.name + ".verified")]
    hits = repository.hits
    again, fresh = artifacts.fetch(fake, cache=cache, repository=repository.base)
    assert (again, fresh) == (path, False)
    assert repository.hits == hits


def _tampered() -> list[tuple[str, bytes, bool]]:
    """(label, body, send Content-Length): generated variants of PAYLOAD."""
    variants: list[tuple[str, bytes, bool]] = []
    for position in (0, 1, len(PAYLOAD) // 3, artifacts.CHUNK, len(PAYLOAD) - 1):
        flipped = bytearray(PAYLOAD)
        flipped[position] ^= 0x01
        variants.append((f"flipped byte {position}", bytes(flipped), True))
    variants += [
        ("truncated by one byte", PAYLOAD[:-1], True),
        ("truncated to half", PAYLOAD[: len(PAYLOAD) // 2], True),
        ("empty", b"", True),
        ("one byte longer", PAYLOAD + b"\0", True),
        ("one byte longer, no length", PAYLOAD + b"\0", False),
        ("a chunk longer, no length", PAYLOAD + bytes(artifacts.CHUNK), False),
    ]
    return variants


@pytest.mark.unit
@pytest.mark.parametrize(("label", "body", "with_length"), _tampered(), ids=[v[0] for v in _tampered()])
def test_a_tampered_artifact_is_refused_naming_it_and_leaves_nothing_in_the_cache(
    repository: _Repository, tmp_path: Path, label: str, body: bytes, with_length: bool
) -> None:
    repository.files[FAKE_PATH] = body
    if not with_length:
        repository.no_length.add(FAKE_PATH)
    fake, cache = _artifact(), tmp_path / "cache"
    with pytest.raises(ArtifactMismatch) as caught:
        artifacts.fetch(fake, cache=cache, repository=repository.base)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("fake-server 1.0 refused")
    assert f"expected sha256 {fake.sha256}" in message
    if len(body) <= len(PAYLOAD):
        assert f"got {hashlib.sha256(body).hexdigest()}" in message
    else:
        assert "more than the locked" in message or "announces" in message
    assert caught.value.artifact == "fake-server" and caught.value.expected == fake.sha256
    assert _files(cache) == []


@pytest.mark.unit
def test_a_stream_beyond_the_locked_size_is_cut_off(repository: _Repository, tmp_path: Path) -> None:
    huge = PAYLOAD + bytes(64 * artifacts.CHUNK)  # 64 MiB more than locked, without a length
    repository.files[FAKE_PATH] = huge
    repository.no_length.add(FAKE_PATH)
    seen: list[int] = []
    with pytest.raises(ArtifactMismatch, match="sent more than the locked"):
        artifacts.fetch(
            _artifact(),
            cache=tmp_path / "cache",
            repository=repository.base,
            progress=lambda a, n: seen.append(n),
        )
    assert max(seen) <= len(PAYLOAD)
    assert _files(tmp_path / "cache") == []


@pytest.mark.unit
def test_a_verified_artifact_is_reused_offline(repository: _Repository, tmp_path: Path) -> None:
    repository.files[FAKE_PATH] = PAYLOAD
    cache = tmp_path / "cache"
    artifacts.fetch(_artifact(), cache=cache, repository=repository.base)
    repository.shutdown()
    repository.server_close()
    path, fresh = artifacts.fetch(_artifact(), cache=cache, repository=repository.base, timeout=1)
    assert not fresh and path.read_bytes() == PAYLOAD
    # a different (uncached) artifact does need the repository: one line naming it
    with pytest.raises(ArtifactUnavailable, match=r"^other: cannot reach http://127\.0\.0\.1:\d+/maven2/"):
        artifacts.fetch(
            _artifact(name="other", path="org/x/1/x-1.jar"), cache=cache, repository=repository.base
        )


@pytest.mark.unit
def test_a_cached_file_changed_on_disk_is_detected_removed_and_fetched_again(
    repository: _Repository, tmp_path: Path
) -> None:
    repository.files[FAKE_PATH] = PAYLOAD
    cache, fake = tmp_path / "cache", _artifact()
    path, _ = artifacts.fetch(fake, cache=cache, repository=repository.base)
    damaged = bytearray(PAYLOAD)
    damaged[10] ^= 0xFF
    path.write_bytes(bytes(damaged))  # same size, new mtime: the stamp no longer vouches for it
    assert not artifacts.is_cached(cache, fake)
    assert not path.exists()
    again, fresh = artifacts.fetch(fake, cache=cache, repository=repository.base)
    assert fresh and again.read_bytes() == PAYLOAD
    os.utime(again, ns=(0, again.stat().st_mtime_ns))  # atime only: still trusted by its stamp
    assert artifacts.is_cached(cache, fake)
    assert artifacts.is_cached(cache, fake, rehash=True)


@pytest.mark.unit
def test_http_errors_and_silence_are_one_line_naming_the_artifact(
    repository: _Repository, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(
        ArtifactUnavailable, match=r"^fake-server: http://.*fake-server-1\.0\.jar answered HTTP 404"
    ):
        artifacts.fetch(_artifact(), cache=cache, repository=repository.base)
    repository.files[FAKE_PATH] = PAYLOAD
    repository.stall[FAKE_PATH] = 3.0
    started = time.monotonic()
    with pytest.raises(ArtifactUnavailable, match=r"did not answer within 0\.5 s"):
        artifacts.fetch(_artifact(), cache=cache, repository=repository.base, timeout=0.5)
    assert time.monotonic() - started < 2.5
    assert _files(cache) == []


@pytest.mark.unit
def test_a_transfer_past_its_deadline_is_abandoned(repository: _Repository, tmp_path: Path) -> None:
    repository.files[FAKE_PATH] = PAYLOAD
    ticks = iter(range(0, 10_000, 100))  # an injected clock: each look at it is 100 s later
    with pytest.raises(ArtifactUnavailable, match=r"^fake-server: .* timed out after \d+ of \d+ bytes"):
        artifacts.fetch(
            _artifact(),
            cache=tmp_path / "cache",
            repository=repository.base,
            clock=lambda: float(next(ticks)),
        )
    assert _files(tmp_path / "cache") == []


# --- where things are ----------------------------------------------------------------------------


@pytest.mark.unit
def test_the_cache_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert artifacts.default_cache() == tmp_path / "user" / ".cache" / "lakehouse" / "artifacts"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert artifacts.default_cache() == tmp_path / "xdg" / "lakehouse" / "artifacts"
    monkeypatch.setenv(artifacts.CACHE_ENV, str(tmp_path / "mine"))
    assert artifacts.default_cache() == tmp_path / "mine"


def _fake_maven_home(where: Path, central: str) -> Path:
    (where / "lib").mkdir(parents=True)
    (where / "conf").mkdir()
    pom = (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><repositories><repository>'
        f"<id>central</id><url>{central}</url></repository></repositories></project>"
    )
    with zipfile.ZipFile(where / "lib" / "maven-model-builder-3.x.jar", "w") as jar:
        jar.writestr("org/apache/maven/model/pom-4.0.0.xml", pom)
    return where


@pytest.mark.unit
def test_the_repository_is_the_env_var_else_a_central_mirror_else_mavens_central(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv(
        "MAVEN_HOME", str(_fake_maven_home(tmp_path / "maven", "https://central.invalid/maven2"))
    )
    assert artifacts.default_repository() == "https://central.invalid/maven2"
    settings = tmp_path / "user" / ".m2" / "settings.xml"
    settings.parent.mkdir(parents=True)
    settings.write_text(
        '<settings xmlns="http://maven.apache.org/SETTINGS/1.0.0"><mirrors>'
        "<mirror><id>other</id><mirrorOf>!central,*</mirrorOf><url>https://not-this.invalid/</url></mirror>"
        "<mirror><id>m</id><mirrorOf>central</mirrorOf><url>https://mirror.invalid/maven2</url></mirror>"
        "</mirrors></settings>"
    )
    assert artifacts.default_repository() == "https://mirror.invalid/maven2"
    monkeypatch.setenv(artifacts.REPOSITORY_ENV, "http://127.0.0.1:9/repo")
    assert artifacts.default_repository() == "http://127.0.0.1:9/repo"


@pytest.mark.unit
def test_no_repository_at_all_says_what_to_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("MAVEN_HOME", raising=False)
    monkeypatch.delenv("M2_HOME", raising=False)
    with pytest.raises(ArtifactError, match=f"set {artifacts.REPOSITORY_ENV}"):
        artifacts.default_repository()


def _fake_jdk(root: Path, name: str, version: str) -> Path:
    home = root / name
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").write_text("#!/bin/sh\n")
    (home / "release").write_text(f'IMPLEMENTOR="test"\nJAVA_VERSION="{version}"\n')
    return home


@pytest.fixture
def jdks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A JDK root with 1.8, 17 and 25, and no other Java in sight."""
    root = tmp_path / "jvm"
    _fake_jdk(root, "java-8", "1.8.0_402")
    _fake_jdk(root, "java-17", "17.0.15")
    _fake_jdk(root, "temurin-25", "25.0.3")
    (root / "not-a-jdk").mkdir()
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    return root


@pytest.mark.unit
def test_the_oldest_jdk_that_is_new_enough_is_chosen(jdks: Path) -> None:
    assert [j.major for j in artifacts.find_jdks(roots=[jdks])] == [8, 17, 25]
    assert artifacts.find_java(11, purpose="kafka", roots=[jdks]).home == jdks / "java-17"
    trino = artifacts.find_java(24, purpose="trino", roots=[jdks])
    assert (trino.major, trino.java) == (25, jdks / "temurin-25" / "bin" / "java")
    with pytest.raises(ToolchainMissing) as caught:
        artifacts.find_java(26, purpose="trino 481", roots=[jdks])
    message = str(caught.value)
    assert message.startswith("trino 481 needs a Java 26+ JDK; found 1.8.0_402")
    assert artifacts.JAVA_HOME_ENV in message and "\n" not in message


@pytest.mark.unit
def test_lakehouse_java_home_is_used_when_new_enough(
    jdks: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(artifacts.JAVA_HOME_ENV, str(jdks / "java-17"))
    assert artifacts.find_java(17, purpose="kafka", roots=[jdks]).major == 17
    with pytest.raises(
        ToolchainMissing, match=r"trino needs Java 24\+, LAKEHOUSE_JAVA_HOME=.* is Java 17\.0\.15"
    ):
        artifacts.find_java(24, purpose="trino", roots=[jdks])
    monkeypatch.setenv(artifacts.JAVA_HOME_ENV, str(tmp_path))
    with pytest.raises(ToolchainMissing, match="is not a JDK"):
        artifacts.find_java(17, purpose="kafka", roots=[jdks])


@pytest.mark.unit
def test_install_names_a_missing_jdk_before_downloading_anything(
    repository: _Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repository.files[FAKE_PATH] = PAYLOAD
    monkeypatch.setenv(artifacts.JAVA_HOME_ENV, str(_fake_jdk(tmp_path, "old", "11.0.2")))
    lock = Lock(tmp_path / "lock.json", (_artifact(java=24),))
    with pytest.raises(ToolchainMissing, match=r"^missing: a Java 24\+ JDK \(for fake-server 1\.0\)"):
        artifacts.install(lock=lock, cache=tmp_path / "cache", repository=repository.base)
    assert repository.hits == 0
    assert _files(tmp_path / "cache") == []


def _go_artifact(**changes: object) -> Artifact:
    fake = Artifact(
        name="opa",
        kind="go",
        service="opa",
        version="v1.2.3",
        path="example.org/opa/@v/v1.2.3.zip",
        sha256="0" * 64,
        size=1,
        module="example.org/opa",
        package="example.org/opa",
        h1="h1:" + "A" * 43 + "=",
        go_mod_h1="h1:" + "B" * 43 + "=",
        go="1.26",
        binary="opa",
    )
    return replace(fake, **changes)  # type: ignore[arg-type]


def _fake_go(where: Path, module_sum: str) -> Path:
    """A `go` that reports version 1.26.8 and answers `mod download -json` with ``module_sum``,
    and records every other call (it must never get to `install`)."""
    where.mkdir(parents=True)
    script = where / "go"
    info = json.dumps({"Path": "example.org/opa", "Version": "v1.2.3", "Sum": module_sum, "GoModSum": "h1:x"})
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {where}/calls\n'
        'if [ "$1" = env ]; then echo go1.26.8; exit 0; fi\n'
        f"if [ \"$1\" = mod ]; then echo '{info}'; exit 0; fi\n"
        "exit 3\n"
    )
    script.chmod(0o755)
    return where


@pytest.mark.unit
def test_a_go_module_with_another_hash_is_refused_before_building(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir = _fake_go(tmp_path / "bin", "h1:" + "Z" * 43 + "=")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(
        ArtifactMismatch, match=r"^opa v1\.2\.3 refused: module hash expected h1:A+=, got h1:Z+="
    ):
        artifacts.build_go(_go_artifact(), cache=tmp_path / "cache")
    assert "install" not in (bin_dir / "calls").read_text()
    assert _files(tmp_path / "cache") == []


@pytest.mark.unit
def test_a_built_binary_in_the_cache_needs_no_go(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    opa, cache = _go_artifact(), tmp_path / "cache"
    assert artifacts.toolchains_needed([opa], cache=cache) == ["Go 1.26+ (to build opa v1.2.3)"]
    binary = artifacts.go_binary_dir(cache, opa) / "opa"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"\x7fELF")
    stamp = {"h1": opa.h1, "sha256": hashlib.sha256(b"\x7fELF").hexdigest()}
    binary.with_name("opa.verified").write_text(json.dumps(stamp))
    assert artifacts.toolchains_needed([opa], cache=cache) == []
    assert artifacts.build_go(opa, cache=cache) == (binary, False)
    binary.write_bytes(b"\x7fELF changed")  # no longer what was built: Go is needed again
    assert artifacts.toolchains_needed([opa], cache=cache) == ["Go 1.26+ (to build opa v1.2.3)"]


# --- unpacking the server tarball --------------------------------------------------------------


def _tarball(members: list[tuple[str, bytes | str]]) -> bytes:
    """A tar.gz of (name, bytes) regular files and (name, "->target") hard links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            if isinstance(body, str):
                info.type, info.linkname = tarfile.LNKTYPE, body.removeprefix("->")
                tar.addfile(info)
            else:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


@pytest.mark.unit
def test_the_server_is_unpacked_with_only_the_plugins_kept(repository: _Repository, tmp_path: Path) -> None:
    body = _tarball(
        [
            ("srv-1/bin/launcher", b"#!/bin/sh\n"),
            ("srv-1/lib/core.jar", b"core"),
            ("srv-1/plugin/drop/shared.jar", b"shared"),
            ("srv-1/plugin/drop/only-drop.jar", b"x"),
            ("srv-1/plugin/keep/core.jar", "->srv-1/lib/core.jar"),
            ("srv-1/plugin/keep/shared.jar", "->srv-1/plugin/drop/shared.jar"),
            ("srv-1/plugin/keep/own.jar", b"own"),
        ]
    )
    server = _artifact(
        body, path="org/example/srv/1/srv-1.tar.gz", unpack={"root": "srv-1", "plugins": ["keep"]}
    )
    repository.files[server.path] = body
    cache = tmp_path / "cache"
    artifacts.fetch(server, cache=cache, repository=repository.base)
    root, fresh = artifacts.unpack(server, cache=cache)
    assert fresh and root.name == "srv-1"
    assert sorted(p.name for p in (root / "plugin").iterdir()) == ["keep"]
    assert {p.name: p.read_bytes() for p in (root / "plugin" / "keep").iterdir()} == {
        "core.jar": b"core",
        "shared.jar": b"shared",
        "own.jar": b"own",
    }
    assert artifacts.unpack(server, cache=cache) == (root, False)
    with pytest.raises(ArtifactError, match="has no plugin gone"):
        artifacts.unpack(replace(server, unpack={"root": "srv-1", "plugins": ["gone"]}), cache=cache)


@pytest.mark.unit
def test_a_tarball_reaching_outside_its_folder_is_refused(repository: _Repository, tmp_path: Path) -> None:
    body = _tarball([("srv-1/lib/a.jar", b"a"), ("srv-1/../../escape.txt", b"gotcha")])
    server = _artifact(body, path="org/example/srv/1/srv-1.tar.gz", unpack={"root": "srv-1", "plugins": []})
    repository.files[server.path] = body
    cache = tmp_path / "cache"
    artifacts.fetch(server, cache=cache, repository=repository.base)
    with pytest.raises(ArtifactError, match="cannot unpack"):
        artifacts.unpack(server, cache=cache)
    assert not list(tmp_path.rglob("escape.txt"))


@pytest.mark.unit
def test_layouts_need_the_cache_and_say_how_to_fill_it(tmp_path: Path) -> None:
    with pytest.raises(
        ArtifactUnavailable, match=r"not in the artifact cache .*: trino-server, .*stack install"
    ):
        artifacts.layouts(lock=artifacts.load_lock(LOCK_FILE), cache=tmp_path / "empty")


# --- the command ------------------------------------------------------------------------------


@pytest.mark.integration
def test_stack_install_fetches_verifies_reuses_and_refuses(repository: _Repository, tmp_path: Path) -> None:
    lock_file = tmp_path / "lock.json"
    fake = _artifact(role="classpath")
    entry = {k: v for k, v in fake.__dict__.items() if v not in (None, "", {})}
    lock_file.write_text(json.dumps({"format": artifacts.LOCK_FORMAT, "artifacts": [entry]}))
    env = {
        artifacts.LOCK_ENV: str(lock_file),
        artifacts.REPOSITORY_ENV: repository.base,
        artifacts.CACHE_ENV: str(tmp_path / "cache"),
    }
    repository.files[FAKE_PATH] = PAYLOAD
    first = run_cli("stack", "install", home=tmp_path / "home", env=env)
    assert first.returncode == 0, first.stderr
    assert "fetched fake-server 1.0" in first.stdout
    assert "1 artifacts verified" in first.stdout and "1 fetched" in first.stdout
    second = run_cli("stack", "install", "--only", "fake", "-o", "json", home=tmp_path / "home", env=env)
    assert [s["action"] for s in json.loads(second.stdout)["steps"]] == ["cached"]
    unknown = run_cli("stack", "install", "--only", "spark", home=tmp_path / "home", env=env)
    assert unknown.returncode == 1 and "not in the lock: spark" in unknown.stderr
    (tmp_path / "cache").rename(tmp_path / "old-cache")
    repository.files[FAKE_PATH] = PAYLOAD[:-1] + b"!"
    tampered = run_cli("stack", "install", home=tmp_path / "home", env=env)
    assert tampered.returncode == 1
    assert tampered.stderr.count("\n") == 1, tampered.stderr
    assert (
        f"error: fake-server 1.0 refused (digest mismatch from {repository.base}/{FAKE_PATH})"
        in tampered.stderr
    )
    assert _files(tmp_path / "cache") == []


# --- the real artifacts (only once `lakehouse stack install` has fetched them) ----------------


def _real_cache() -> tuple[Lock, Path, list[str]]:
    """The lock, the cache as configured when the tests were collected (the fixtures clear
    LAKEHOUSE_* variables later) and which artifacts it lacks."""
    lock, cache = artifacts.load_lock(LOCK_FILE), artifacts.default_cache()
    missing = [
        a.name
        for a in lock.artifacts
        if not (
            (cache / a.kind / a.path).is_file()
            if a.kind == "maven"
            else (artifacts.go_binary_dir(cache, a) / a.binary).is_file()
        )
    ]
    return lock, cache, missing


REAL_LOCK, REAL_CACHE, REAL_MISSING = _real_cache()


real_artifacts = pytest.mark.skipif(
    bool(REAL_MISSING),
    reason=f"needs the real server artifacts in {REAL_CACHE}: `lakehouse stack install` not run "
    f"(missing {len(REAL_MISSING)}, e.g. {', '.join(REAL_MISSING[:3])})",
)


@pytest.fixture(scope="module")
def real_layouts() -> dict[str, artifacts.Layout]:
    return artifacts.layouts(lock=REAL_LOCK, cache=REAL_CACHE)


@real_artifacts
@pytest.mark.integration
@pytest.mark.cluster
@pytest.mark.slow
def test_every_cached_artifact_still_has_its_locked_digest() -> None:
    for artifact in REAL_LOCK.artifacts:
        if artifact.kind == "maven":
            assert artifacts.is_cached(REAL_CACHE, artifact, rehash=True), artifact.name


@real_artifacts
@pytest.mark.integration
@pytest.mark.cluster
def test_each_service_layout_is_ready_to_run(real_layouts: dict[str, artifacts.Layout]) -> None:
    trino = real_layouts["trino"]
    assert trino.home is not None and (trino.home / "lib").is_dir()
    assert {"iceberg", "memory", "opa", "password-authenticators", "tpch"} == {
        p.name for p in (trino.home / "plugin").iterdir()
    }
    assert any(p.name.startswith("io.trino_trino-main-") for p in trino.classpath)
    assert set(trino.tools) == {"trino-cli", "trino-jdbc"}
    assert trino.java is not None and artifacts.find_java(trino.java, purpose="trino").major >= 24
    nessie = real_layouts["nessie"]
    assert len(nessie.classpath) == 1 and nessie.classpath[0].name.endswith("-runner.jar")
    assert nessie.java is not None and artifacts.find_java(nessie.java, purpose="nessie").major >= 21
    kafka = real_layouts["kafka"]
    assert kafka.main == "kafka.Kafka" and len(kafka.classpath) > 30
    assert all(p.is_file() for p in kafka.classpath)


@real_artifacts
@pytest.mark.integration
@pytest.mark.cluster
def test_the_built_opa_is_the_locked_version(real_layouts: dict[str, artifacts.Layout]) -> None:
    binary = real_layouts["opa"].binary
    assert binary is not None
    version = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=60).stdout
    assert f"Version: {REAL_LOCK.by_name()['opa'].version.removeprefix('v')}" in version


@real_artifacts
@pytest.mark.integration
@pytest.mark.cluster
def test_the_kafka_closure_loads_and_the_trino_cli_runs(real_layouts: dict[str, artifacts.Layout]) -> None:
    kafka = real_layouts["kafka"]
    assert kafka.java is not None
    java = artifacts.find_java(kafka.java, purpose="kafka").java
    classpath = os.pathsep.join(str(p) for p in kafka.classpath)
    uuid = subprocess.run(
        [java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert uuid.returncode == 0, uuid.stderr[-2000:]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", uuid.stdout.strip().splitlines()[-1])
    cli = subprocess.run(
        [java, "-jar", real_layouts["trino"].tools["trino-cli"], "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.stdout.strip().endswith(f"Trino CLI {real_layouts['trino'].version}")
