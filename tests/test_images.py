"""The container images (infra/*.Dockerfile): no container engine runs here, so the Dockerfiles are
parsed and checked against what they must agree with (the locks, pyproject, the chart's values,
the Trino plugin's build), and the platform's environment is built the way its Dockerfile builds
it, from the same lock and the same build context, and run as the chart's user."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .conftest import REPO

PLATFORM = REPO / "infra" / "platform.Dockerfile"
EDGE = REPO / "infra" / "edge-agent.Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PLUGIN_DIR = "/opt/lakehouse/trino-plugin/lakehouse-pii/"


# --- reading a Dockerfile ----------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str  # continuation lines joined

    def words(self) -> list[str]:
        return shlex.split(self.args, comments=False)

    def flags(self) -> dict[str, str]:
        return dict(w[2:].split("=", 1) for w in self.words() if w.startswith("--") and "=" in w)


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for i in self.all("ENV"):
            for word in i.words():
                name, _, value = word.partition("=")
                found[name] = value
        return found

    def labels(self) -> dict[str, str]:
        return {k: v for i in self.all("LABEL") for k, _, v in (w.partition("=") for w in i.words())}


def parse(path: Path) -> list[Stage]:
    """The stages of a Dockerfile, each with its instructions (comments dropped, continuation
    lines joined, heredocs not used by ours)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment between continuation lines
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path.name} ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{path.name}: {keyword} before FROM"
            stages[-1].instructions.append(Instruction(keyword, args.strip()))
    return stages


def stage_names(stages: list[Stage]) -> set[str]:
    return {s.name for s in stages if s.name}


def images(stages: list[Stage]) -> list[str]:
    """Every image the build pulls: FROM lines and COPY --from= naming an image, not a stage."""
    names = stage_names(stages)
    pulled = [s.image for s in stages if s.image not in names]
    for stage in stages:
        for copy in stage.all("COPY"):
            source = copy.flags().get("from")
            if source and source not in names:
                pulled.append(source)
    return pulled


def run_commands(stage: Stage) -> list[list[str]]:
    """The commands of a stage's RUN instructions (split at ``&&``)."""
    commands = []
    for run in stage.all("RUN"):
        words = [w for w in run.words() if not w.startswith("--mount=")]
        command: list[str] = []
        for word in [*words, "&&"]:
            if word == "&&":
                if command:
                    commands.append(command)
                command = []
            else:
                command.append(word)
    return commands


def installs(stage: Stage) -> list[list[str]]:
    """Every command of the stage that installs Python packages."""
    return [
        c
        for c in run_commands(stage)
        if c[:3] in (["uv", "pip", "sync"], ["uv", "pip", "install"]) or ("pip" in c[:3] and "install" in c)
    ]


def chart_values() -> dict[str, object]:
    values: dict[str, object] = yaml.safe_load((REPO / "charts/lakehouse/values.yaml").read_text())
    return values


def chart_uid() -> int:
    return int(chart_values()["global"]["securityContext"]["runAsUser"])  # type: ignore[index]


def locked_names(lock: Path) -> dict[str, list[str]]:
    """name -> the hashes pinned for it, from a ``uv pip compile --generate-hashes`` lock."""
    found: dict[str, list[str]] = {}
    current = None
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+", line)
        if match:
            current = canonicalize_name(match.group(1))
            found[current] = []
        elif current and (hashed := re.search(r"--hash=(sha256:[0-9a-f]{64})", line)):
            found[current].append(hashed.group(1))
    return found


def declared(pyproject: Path) -> set[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    return {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}


# --- the checks --------------------------------------------------------------------------------


DOCKERFILES = [pytest.param(PLATFORM, id="platform"), pytest.param(EDGE, id="edge-agent")]


@pytest.mark.unit
@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_image_is_pinned_by_an_exact_version(dockerfile: Path) -> None:
    pulled = images(parse(dockerfile))
    assert pulled
    for image in pulled:
        _, _, tag = image.rpartition(":") if "@" not in image else ("", "", "")
        assert "@sha256:" in image or re.fullmatch(r"\d+\.\d+\.\d+([.-][\w.-]+)?", tag), (
            f"{dockerfile.name}: {image} is not pinned to an exact version (x.y.z) or a digest"
        )
        assert "latest" not in image


@pytest.mark.unit
@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_final_stage_runs_as_the_charts_numeric_non_root_user(dockerfile: Path) -> None:
    final = parse(dockerfile)[-1]
    users = final.all("USER")
    assert users, f"{dockerfile.name}'s final stage sets no USER: it would run as root"
    user = users[-1].args
    assert re.fullmatch(r"\d+:\d+", user), f"USER {user}: numeric uid:gid (runAsNonRoot checks numbers)"
    uid, gid = (int(x) for x in user.split(":"))
    assert uid != 0 and gid != 0
    assert uid == chart_uid(), f"USER {uid}, the chart runs pods as {chart_uid()}"
    assert final.instructions.index(users[-1]) > max(final.instructions.index(i) for i in final.all("RUN")), (
        "no RUN after the USER: whatever runs at build time as root ends before it"
    )
    # a user of that uid exists in the image (tools that ask for a user name find one)
    assert any(f"--uid {uid}" in run.args for run in final.all("RUN"))


@pytest.mark.unit
@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_runtime_is_python_311_like_the_locks_and_read_only_root_friendly(dockerfile: Path) -> None:
    stages = parse(dockerfile)
    final = stages[-1]
    pythons = [s.image for s in stages if s.image.startswith("python:")]
    # the venv's interpreter is the base image's: builder and runtime must be the same image
    assert len(set(pythons)) == 1, pythons
    assert pythons[0].startswith("python:3.11."), pythons[0]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in requires
    assert "--python-version 3.11" in (REPO / "Makefile").read_text()  # the lock's resolution
    env = final.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp"  # an emptyDir in the pod
    builder = next(s for s in stages if s.name == "builder")
    assert builder.env().get("UV_COMPILE_BYTECODE") == "1"  # compiled at build time instead
    labels = final.labels()
    for key in ("title", "version", "revision", "source", "licenses", "base.name"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.base.name"].endswith(pythons[0])


@pytest.mark.unit
def test_the_platform_image_installs_exactly_the_lock_with_hashes_and_the_project_without_deps() -> None:
    stages = parse(PLATFORM)
    builder = next(s for s in stages if s.name == "builder")
    commands = installs(builder)
    syncs = [c for c in commands if c[:3] == ["uv", "pip", "sync"]]
    assert len(syncs) == 1 and "--require-hashes" in syncs[0] and syncs[0][-1] == "requirements.lock"
    copied = [c.words() for c in builder.all("COPY")]
    assert ["requirements.lock", "./"] in copied  # the repository's own lock, as it is
    others = [c for c in commands if c not in syncs]
    assert others and all("--no-deps" in c for c in others), others
    assert all(c[-1] == "/wheels/*.whl" for c in others)
    # the wheels: the project and the in-repo edge agent, built with hashed build tools
    builds = [c for c in run_commands(builder) if c[:2] == ["uv", "build"]]
    assert {c[-1] for c in builds} == {".", "services/edge-agent"}
    assert all("--require-hashes" in c and "infra/build-constraints.lock" in c for c in builds)
    assert ["uv", "pip", "check", "--python", "/opt/lakehouse/venv/bin/python"] in run_commands(builder)
    # the runtime takes the venv and installs nothing itself
    runtime = stages[-1]
    assert not installs(runtime)
    assert any(
        c.words() == ["--from=builder", "/opt/lakehouse/venv", "/opt/lakehouse/venv"]
        for c in runtime.all("COPY")
    )
    assert runtime.env()["PATH"].startswith("/opt/lakehouse/venv/bin:")
    assert runtime.all("ENTRYPOINT")[-1].args == '["lakehouse"]'
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "lakehouse" in scripts


@pytest.mark.unit
def test_the_lock_the_platform_image_installs_covers_every_declared_dependency() -> None:
    locked = locked_names(REPO / "requirements.lock")
    # the edge agent comes from this repository as a wheel (--no-deps), never from the lock
    needed = declared(REPO / "pyproject.toml") - {"lakehouse-edge"}
    assert needed - set(locked) == set(), f"pinned nowhere: {sorted(needed - set(locked))}"
    assert "prometheus-client" in locked
    unhashed = sorted(name for name, hashes in locked.items() if not hashes)
    assert not unhashed, f"no hash in requirements.lock for {unhashed}: --require-hashes would refuse"
    # and what the edge agent itself needs is in it too (installed with --no-deps beside it)
    assert declared(REPO / "services/edge-agent/pyproject.toml") <= set(locked)
    build = locked_names(REPO / "infra" / "build-constraints.lock")
    assert {"setuptools", "wheel"} <= set(build) and all(build.values())


@pytest.mark.unit
def test_the_edge_image_installs_its_own_hashed_lock_resolved_for_the_pi() -> None:
    stages = parse(EDGE)
    builder = next(s for s in stages if s.name == "builder")
    syncs = [c for c in installs(builder) if c[:3] == ["uv", "pip", "sync"]]
    assert len(syncs) == 1 and "--require-hashes" in syncs[0]
    assert ["services/edge-agent/requirements.lock", "./requirements.lock"] in [
        c.words() for c in builder.all("COPY")
    ]
    assert all("--no-deps" in c for c in installs(builder) if c not in syncs)
    lock = REPO / "services/edge-agent/requirements.lock"
    locked = locked_names(lock)
    assert declared(REPO / "services/edge-agent/pyproject.toml") <= set(locked)
    assert all(locked.values()), "every pin carries its hashes"
    header = lock.read_text()
    # Raspberry Pi OS Bookworm's Python, resolved for every platform (aarch64 and x86_64 wheels)
    assert "--python-version 3.11" in header and "--universal" in header and "--generate-hashes" in header
    # the same versions as the platform's lock: the gateway opens what the agent seals
    platform = (REPO / "requirements.lock").read_text()
    for pin in re.findall(r"^([a-z0-9-]+==\S+)", lock.read_text(), re.MULTILINE):
        assert re.search(rf"^{re.escape(pin)}\b", platform, re.MULTILINE), pin
    final = stages[-1]
    assert final.all("ENTRYPOINT")[-1].args == '["lakehouse-edge"]'
    assert final.env()["STATE_DIRECTORY"] in final.all("VOLUME")[-1].args  # the queue outlives it


@pytest.mark.unit
def test_the_trino_plugin_is_built_like_stack_install_builds_it_and_lands_where_the_chart_copies_it() -> None:
    from lakehouse.local._artifacts import PLUGIN_JAR, PLUGIN_JAVA, PLUGIN_SOURCE

    stages = parse(PLATFORM)
    maven = next(s for s in stages if s.image.startswith("maven:"))
    java = int(re.search(r"temurin-(\d+)", maven.image).group(1))  # type: ignore[union-attr]
    assert java >= PLUGIN_JAVA, f"the plugin needs a Java {PLUGIN_JAVA}+ JDK, the stage has {java}"
    assert [f"{PLUGIN_SOURCE.as_posix()}/", "./"] in [c.words() for c in maven.all("COPY")]
    commands = run_commands(maven)
    assert ["mvn", "-q", "-B", "-Dstyle.color=never", "package"] in commands  # as build_plugin runs it
    assert any(c[-1] == PLUGIN_DIR + PLUGIN_JAR and f"target/{PLUGIN_JAR}" in c for c in commands)
    final = stages[-1]
    assert [f"--from={maven.name}", "/opt/lakehouse/trino-plugin/", "/opt/lakehouse/trino-plugin/"] in [
        c.words() for c in final.all("COPY")
    ]
    plugin_path = chart_values().get("trino", {}).get("pii", {}).get("pluginPath")  # type: ignore[union-attr]
    if plugin_path is not None:
        assert plugin_path.rstrip("/") + "/" == PLUGIN_DIR
    # the chart's init container copies the plugin out with `cp`: the runtime removes pip only
    removed = [w for c in run_commands(final) if c[0] == "rm" for w in c[1:] if not w.startswith("-")]
    assert removed and all("pip" in w for w in removed), removed


@pytest.mark.unit
def test_the_project_is_where_the_cli_and_the_chart_look_for_it() -> None:
    final = parse(PLATFORM)[-1]
    project = final.env()["LAKEHOUSE_PROJECT_DIR"]
    copies = {tuple(c.words()) for c in final.all("COPY")}
    for folder in ("contracts", "dbt", "policies"):
        assert (f"{folder}/", f"{project}/{folder}/") in copies, folder
    assert chart_values()["platform"]["projectDir"] == project  # type: ignore[index]
    assert final.env()["LAKEHOUSE_HOME"] == "/var/lib/lakehouse"  # the chart's state volume


# --- the build context -------------------------------------------------------------------------


def _pattern(rule: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(rule):
        if rule.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif rule.startswith("**", i):
            out, i = out + ".*", i + 2
        elif rule[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif rule[i] == "?":
            out, i = out + "[^/]", i + 1
        elif rule[i] == "[":
            end = rule.index("]", i)
            out, i = out + rule[i : end + 1], end + 1
        else:
            out, i = out + re.escape(rule[i]), i + 1
    return re.compile(out)


def context_files() -> list[str]:
    """The repository's files the build context holds under .dockerignore (Docker's rules: the
    last matching line wins; a line matches a path or any folder above it)."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            text = line.lstrip("!").strip("/")
            rules.append((negated, text, _pattern(text)))

    def excluded(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        out = False
        for negated, _, pattern in rules:
            if any(pattern.fullmatch(p) for p in prefixes):
                out = not negated
        return out

    def reopened(folder: str) -> bool:  # whether a "!" line could let in something below it
        return any(n and (t.startswith(folder + "/") or t.startswith("**")) for n, t, _ in rules)

    kept = []
    for folder, dirs, files in os.walk(REPO):
        here = Path(folder).relative_to(REPO).as_posix()
        here = "" if here == "." else here + "/"
        dirs[:] = [d for d in dirs if not excluded(here + d) or reopened(here + d)]
        kept += [here + name for name in files if not excluded(here + name)]
    return sorted(kept)


@pytest.mark.unit
def test_the_build_context_holds_what_the_images_copy_and_nothing_private() -> None:
    kept = context_files()
    tops = {p.split("/")[0] for p in kept}
    assert tops <= {
        "pyproject.toml",
        "README.md",
        "requirements.lock",
        "infra",
        "services",
        "contracts",
        "dbt",
        "policies",
    }, tops
    assert not [p for p in kept if re.search(r"(^|/)(\.venv|\.lakehouse|__pycache__|target)(/|$)", p)]
    assert not [p for p in kept if re.search(r"\.(pem|key|p12|pyc)$|(^|/)\.env$", p)]
    for dockerfile in (PLATFORM, EDGE):
        for stage in parse(dockerfile):
            for copy in stage.all("COPY"):
                words = [w for w in copy.words() if not w.startswith("--")]
                if copy.flags().get("from"):
                    continue
                for source in words[:-1]:
                    source = source.rstrip("/")
                    assert any(p == source or p.startswith(source + "/") for p in kept), (
                        f"{dockerfile.name} copies {source}, which the build context leaves out"
                    )


# --- what can run here: the platform's environment, built as the image builds it --------------


def _as_image_user() -> list[str]:
    """A prefix running a command as the chart's uid (root here, with setpriv), else nothing."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv:
        uid = chart_uid()
        return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all"]
    return []


def _snapshot(root: Path) -> dict[str, float]:
    return {p.as_posix(): p.stat().st_mtime for p in root.rglob("*")}


@pytest.mark.integration
@pytest.mark.slow
def test_the_platform_venv_builds_from_the_lock_and_runs_as_the_charts_user() -> None:
    python = "/usr/bin/python3.11"  # a system interpreter the image's uid can read (3.11, as the image's)
    if not os.access(python, os.X_OK):
        pytest.skip(f"needs {python}, an interpreter another uid can run")
    uv = str(Path(sys.executable).parent / "uv")
    root = Path(tempfile.mkdtemp(prefix="lakehouse-image-", dir="/tmp"))
    try:
        root.chmod(0o755)
        context = root / "context"  # exactly what the Docker daemon would be sent
        for rel in context_files():
            target = context / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, target)
        venv = root / "opt/lakehouse/venv"
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_LINK_MODE": "copy"}

        def run(*command: str, cwd: Path = context) -> None:
            done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"

        # the builder stage's commands, in its order (without UV_COMPILE_BYTECODE: the CPU is shared)
        run(uv, "venv", "--python", python, str(venv))
        run(uv, "pip", "sync", "--require-hashes", "--python", str(venv / "bin/python"), "requirements.lock")
        for project in (".", "services/edge-agent"):
            run(
                uv, "build", "--wheel", "--out-dir", str(root / "wheels"),
                "--build-constraints", "infra/build-constraints.lock", "--require-hashes", project,
            )  # fmt: skip
        wheels = sorted(str(p) for p in (root / "wheels").glob("*.whl"))
        assert [Path(w).name.split("-")[0] for w in wheels] == ["lakehouse_edge", "lakehouse_platform"]
        run(uv, "pip", "install", "--no-deps", "--python", str(venv / "bin/python"), *wheels)
        run(uv, "pip", "check", "--python", str(venv / "bin/python"))

        # the runtime stage: the project read-only and root's, a home and /tmp of the user's own
        project = root / "opt/lakehouse/project"
        for folder in ("contracts", "dbt", "policies"):
            shutil.copytree(context / folder, project / folder)
        for path in [project, *project.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        uid = chart_uid()
        user = _as_image_user()
        home, tmp = root / "var/lib/lakehouse", root / "tmp"
        for folder in (home, tmp):
            folder.mkdir(parents=True)
            folder.chmod(0o700)
            if user:
                os.chown(folder, uid, uid)
        image_env = {
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LAKEHOUSE_PROJECT_DIR": str(project),
            "LAKEHOUSE_HOME": str(home),
            "HOME": str(tmp),
            "TMPDIR": str(tmp),
        }
        before = _snapshot(root / "opt")

        def lakehouse(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*user, str(venv / "bin/lakehouse"), *args],
                env=image_env,
                cwd=home,
                capture_output=True,
                text=True,
                timeout=300,
            )

        helped = lakehouse("--help")
        assert helped.returncode == 0, helped.stderr[-2000:]
        assert "sink" in helped.stdout and "gateway" in helped.stdout
        # the project is found through LAKEHOUSE_PROJECT_DIR and read, never written
        checked = lakehouse("policy", "check")
        assert checked.returncode == 0, checked.stderr[-2000:]
        assert checked.stdout.startswith("policy ok")
        sources = lakehouse("contracts", "dbt-sources")
        assert sources.returncode == 0 and "name: bronze" in sources.stdout, sources.stderr[-2000:]
        who = subprocess.run(
            [*user, str(venv / "bin/python"), "-c", "import os; print(os.getuid(), os.getgid())"],
            env=image_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if user:
            assert who.stdout.split() == [str(uid), str(uid)]
        assert _snapshot(root / "opt") == before, "the venv or the project was written to at run time"
    finally:
        shutil.rmtree(root, ignore_errors=True)
