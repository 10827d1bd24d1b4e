"""``train.space`` against a local Hub (tests/hub_server.py): push a model, deploy the app and the dashboard,
download each Space into a fresh folder and run it there as the Space would.

A Space's process sees only the Space's own files: cwd is the downloaded folder, ``PYTHONPATH`` is empty
and, beyond ``PATH`` and ``HOME``, only ``HF_ENDPOINT``, a fresh ``HF_HOME`` and the server's port are set.
The imports of every installed distribution the Space's ``requirements.txt`` would not bring in are
refused (:data:`WITHOUT`), so a Space that runs here runs with only what it declares. Nothing here
touches the internet or mocks ``HfApi``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml

from train.spacefiles import APP_PORT, DOCKERFILE_TEMPLATE, WEIGHT_SUFFIXES, normalise, read_pins, with_dependencies

from .conftest import ROOT, free_port
from .hub_server import FakeHub
from .test_push import hub_env

MODEL = "test-user/tiny-mri"
SPACE = "test-user/tiny-mri-demo"
DASHBOARD = "test-user/tiny-mri-results"
#: In a Space's base image whatever its requirements say.
BASE_IMAGE = {"pip", "setuptools", "wheel"}
OUTPUTS: list[str] = []

# argv: [refused top-level modules (JSON), then the script and its arguments]. The path finder stops
# finding the refused modules (as if not installed: find_spec says None, import raises ImportError),
# prints where tumorlib comes from, then runs the script as ``python SCRIPT`` would.
WITHOUT = r"""
import importlib.machinery, json, runpy, sys

refused = frozenset(json.loads(sys.argv[1]))


class Finder(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.partition(".")[0] in refused else super().find_spec(name, path, target)


sys.meta_path = [Finder if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
import tumorlib

print("TUMORLIB", tumorlib.__file__, flush=True)
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

DOWNLOAD = """
import sys
from huggingface_hub import snapshot_download
print(snapshot_download(sys.argv[1], repo_type="space", local_dir=sys.argv[2]))
"""

# Streamlit's own headless test runner on the dashboard, run by WITHOUT: what the page shows, any exception.
APPTEST = """
import json, os
from streamlit.testing.v1 import AppTest

# from_file reads a relative path from the calling file's folder: the Space's folder is the cwd.
at = AppTest.from_file(os.path.abspath("streamlit_app.py"), default_timeout=120).run()
texts = [e.value for kind in ("title", "header", "subheader", "markdown", "caption") for e in at.get(kind)]
options = [str(o) for box in at.selectbox for o in box.options]
print("PAGE " + json.dumps({"exceptions": [str(e.value) for e in at.exception], "texts": texts, "options": options}))
"""


# --------------------------------------------------------------------------- helpers and fixtures


def run(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    OUTPUTS.extend([proc.stdout, proc.stderr])
    return proc


def refused_modules(requirements: Path) -> list[str]:
    """Top-level modules of the distributions installed here that ``pip install -r requirements`` would not
    bring in (a module two distributions share, like opencv's ``cv2``, stays if either is allowed)."""
    allowed = with_dependencies(set(read_pins(requirements))) | BASE_IMAGE
    providers = importlib.metadata.packages_distributions()
    return sorted(m for m, dists in providers.items() if not {normalise(d) for d in dists} & allowed)


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def local_files(folder: Path) -> dict[str, bytes]:
    """A downloaded or dry-run Space's files (huggingface_hub's own .cache/ of a download left out)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).parts[0] != ".cache"
    }


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, ""


def serve(command: list[str], env: dict[str, str], cwd: Path, url: str, log: Path) -> subprocess.Popen:
    """Start a server and wait until ``url`` answers 200; fails with the log's tail if it never does."""
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300  # torch, gradio, a model download and its warm-up on two shared cores
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if get(url)[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(1)
    proc.kill()
    pytest.fail(f"the server did not answer {url} in time:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def space_env(hub: FakeHub, tmp: Path, **extra: str) -> dict[str, str]:
    """A Space process's environment: the Hub, a fresh HF cache, nothing from this checkout."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp / "home"), "PYTHONPATH": ""}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp / "hf_home"), **extra)
    return env


@pytest.fixture(scope="module")
def token() -> str:
    return "hf_test_" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, token):
    with FakeHub(tmp_path_factory.mktemp("hub"), token) as server:
        yield server


@pytest.fixture(scope="module")
def env(hub, token, tmp_path_factory) -> dict[str, str]:
    return hub_env(hub.url, token, tmp_path_factory.mktemp("hf_home"))


@pytest.fixture(scope="module")
def pushed(tiny_bundle, env) -> subprocess.CompletedProcess:
    return run(["-m", "train.push", str(tiny_bundle), MODEL], env)


@pytest.fixture(scope="module")
def deployed(pushed, env) -> subprocess.CompletedProcess:
    assert pushed.returncode == 0, pushed.stderr[-4000:]
    return run(["-m", "train.space", SPACE, "--model", MODEL], env)


@pytest.fixture(scope="module")
def dry_run(hub, tmp_path_factory) -> Path:
    """The same deploy as a dry run: no token, and nothing asked of the Hub."""
    out = tmp_path_factory.mktemp("dry") / "space"
    before = len(hub.requests)
    proc = run(
        ["-m", "train.space", SPACE, "--model", MODEL, "--dry-run", str(out)], hub_env(hub.url, None, out.parent)
    )
    assert len(hub.requests) == before
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.splitlines()[-1].startswith(f"{len(local_files(out))} files, ")
    return out


def download(space: str, hub: FakeHub, folder: Path) -> Path:
    proc = run(["-c", DOWNLOAD, space, str(folder)], hub_env(hub.url, None, folder.parent / "download_home"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return folder


@pytest.fixture(scope="module")
def space_dir(deployed, hub, tmp_path_factory) -> Path:
    assert deployed.returncode == 0, deployed.stderr[-4000:]
    return download(SPACE, hub, tmp_path_factory.mktemp("space") / "app")


@pytest.fixture(scope="module")
def space_app(space_dir, hub, tmp_path_factory):
    """The downloaded Space's app_file, running; yields (url, log file)."""
    tmp = tmp_path_factory.mktemp("space_run")
    port = free_port()
    card = front_matter((space_dir / "README.md").read_text())
    refused = refused_modules(space_dir / "requirements.txt")
    command = [sys.executable, "-c", WITHOUT, json.dumps(refused), card["app_file"]]
    url = f"http://127.0.0.1:{port}/"
    log = tmp / "app.log"
    proc = serve(command, space_env(hub, tmp, GRADIO_SERVER_PORT=str(port)), space_dir, url, log)
    yield url, log
    stop(proc)


@pytest.fixture(scope="module")
def dashboard_deployed(env, hub) -> list[subprocess.CompletedProcess]:
    """The dashboard deployed, edited on the Hub (a stray file, a changed one), deployed again."""
    first = run(["-m", "train.space", DASHBOARD, "--dashboard"], env)
    if first.returncode == 0:
        hub.commit_files(f"spaces/{DASHBOARD}", {"stray.txt": b"left by hand\n", "streamlit_app.py": b"print(1)\n"})
    return [first, run(["-m", "train.space", DASHBOARD, "--dashboard"], env)]


@pytest.fixture(scope="module")
def dashboard_dir(dashboard_deployed, hub, tmp_path_factory) -> Path:
    for proc in dashboard_deployed:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return download(DASHBOARD, hub, tmp_path_factory.mktemp("space") / "dashboard")


def dockerfile(folder: Path) -> tuple[list[str], dict[str, str], list[str]]:
    """(RUN commands, ENV values, CMD) of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (folder / "Dockerfile").read_text())
    runs, values, cmd = [], {}, []
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "RUN":
            runs.append(rest.strip())
        elif word == "ENV":
            values.update(item.split("=", 1) for item in rest.split())
        elif word == "CMD":
            cmd = json.loads(rest)
    return runs, values, cmd


# --------------------------------------------------------------------------- the Gradio Space


def test_the_space_holds_the_app_and_no_weights(deployed, dry_run, hub, tiny_bundle):
    assert deployed.returncode == 0, deployed.stderr[-4000:]
    assert deployed.stdout.strip().splitlines()[-1] == f"{hub.url}/spaces/{SPACE}"
    repo = hub.repos[f"spaces/{SPACE}"]
    assert repo.sdk == "gradio" and not repo.private
    files = hub.files(f"spaces/{SPACE}")
    # What the dry run wrote is what was committed, byte for byte.
    assert {k: v for k, v in files.items() if k != ".gitattributes"} == local_files(dry_run)
    assert {"app.py", "space_app.py", "requirements.txt", "README.md", "tumorlib/__init__.py"} <= set(files)
    assert files["app.py"] == (ROOT / "app.py").read_bytes()
    for path in (ROOT / "tumorlib").rglob("*.py"):
        if "__pycache__" not in path.parts:
            assert files[path.relative_to(ROOT).as_posix()] == path.read_bytes()
    assert {p.name for p in (ROOT / "examples").iterdir()} == {
        k.split("/")[1] for k in files if k.startswith("examples/")
    }
    # the paper's printed tables, which the Model tab compares with
    assert {"results/paper/table1.csv", "results/paper/table2.csv"} <= set(files)
    assert not [name for name in files if name.lower().endswith(WEIGHT_SUFFIXES) or "__pycache__" in name]
    weights = (tiny_bundle / "model.safetensors").read_bytes()
    assert weights not in files.values()
    assert files["space_app.py"].decode().count(f'"{MODEL}"') == 1


def test_the_space_card(deployed, hub):
    assert deployed.returncode == 0, deployed.stderr[-4000:]
    files = hub.files(f"spaces/{SPACE}")
    card = front_matter(files["README.md"].decode())
    project = front_matter((ROOT / "README.md").read_text())
    pins = read_pins(ROOT / "requirements.txt")
    assert card["sdk"] == "gradio" and card["sdk_version"] == pins["gradio"].partition("==")[2]
    assert card["app_file"] == "space_app.py" and card["app_file"] in files
    assert card["models"] == [MODEL] and card["preload_from_hub"] == [MODEL]
    for key in ("python_version", "license", "short_description", "title", "emoji"):
        assert card[key] == project[key], key
    assert len(card["short_description"]) <= 60  # the Hub's limit
    assert f'Client("{SPACE}")' in files["README.md"].decode()


def test_the_space_requirements_are_the_apps_pins(deployed, hub):
    assert deployed.returncode == 0, deployed.stderr[-4000:]
    lines = [line for line in hub.files(f"spaces/{SPACE}")["requirements.txt"].decode().splitlines() if line[:1] != "#"]
    pins = read_pins(ROOT / "requirements.txt")
    assert lines and set(lines) <= set(pins.values())  # the project's own pinned lines, nothing else
    names = {normalise(line.partition("==")[0]) for line in lines}
    assert {
        "torch",
        "torchvision",
        "timm",
        "gradio",
        "huggingface-hub",
        "opencv-python-headless",
        "python-gdcm",
    } <= names
    # The trainer's and the dashboard's packages stay out (the running Space below proves it needs none).
    assert not names & {"accelerate", "h5py", "scipy", "streamlit"}


def test_the_deployed_space_classifies_as_the_checkouts_app(space_app, space_dir, tiny_bundle, slice_path, hub):
    from gradio_client import Client, handle_file

    import app
    from tumorlib import decode_image
    from tumorlib.inference import reference_images
    from tumorlib.runtime import TOLERANCE

    url, log = space_app
    label, overlay, summary = Client(url, verbose=False).predict(handle_file(str(slice_path)), api_name="/predict")
    text = log.read_text()
    # The Space's own tumorlib, not this checkout's; the model from the Hub, not a folder.
    origin = Path(re.search(r"^TUMORLIB (.+)$", text, flags=re.M).group(1))
    assert origin.is_relative_to(space_dir)
    assert f"Loaded model {MODEL}" in text
    fetched = [r.path for r in hub.requests_to(f"/{MODEL}/resolve/", method="GET")]
    assert [p for p in fetched if p.endswith("/model.safetensors")], fetched

    # The checkout's app on the same file, first in fp32, then with the forward pass the Space chose (it
    # keeps the fastest that gives fp32's answers, within TOLERANCE, on the same real slices as here).
    service = app.DemoService(app.specs_from([tiny_bundle]))
    fp32, _, _ = service.predict(str(slice_path))
    chosen = re.search(r"Forward pass: (\S+) \[", text).group(1)
    expected = fp32
    if chosen != "fp32":
        _, clf = service.registry.get()
        clf.use(chosen, torch.stack([clf.preprocess(decode_image(p)) for p in reference_images()]))
        expected, _, _ = service.predict(str(slice_path))
    got = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert label["label"] == max(expected, key=expected.get) == max(fp32, key=fp32.get)
    assert got == pytest.approx(expected, abs=1e-6), chosen
    assert got == pytest.approx(fp32, abs=TOLERANCE)
    assert overlay and Path(overlay).is_file() and summary
    assert "Traceback" not in text


# --------------------------------------------------------------------------- the dashboard Space


def test_the_dashboard_space_holds_the_results_and_no_weights(dashboard_deployed, dashboard_dir, hub):
    files = hub.files(f"spaces/{DASHBOARD}")
    assert hub.repos[f"spaces/{DASHBOARD}"].sdk == "docker"
    # Redeploying put back what was changed on the Hub and deleted what the deploy does not hold.
    assert "stray.txt" not in files and files["streamlit_app.py"] == (ROOT / "streamlit_app.py").read_bytes()
    assert files == local_files(dashboard_dir)  # the download is the Space
    for path in (ROOT / "results").rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            assert files[path.relative_to(ROOT).as_posix()] == path.read_bytes()
    for bundle in (ROOT / "models").glob("*/metrics.json"):
        assert files[bundle.relative_to(ROOT).as_posix()] == bundle.read_bytes()
    assert not [name for name in files if name.lower().endswith(WEIGHT_SUFFIXES)]
    assert files[".streamlit/config.toml"] == (ROOT / ".streamlit" / "config.toml").read_bytes()
    assert files["Dockerfile"] == (ROOT / DOCKERFILE_TEMPLATE).read_bytes()
    card = front_matter(files["README.md"].decode())
    assert card["sdk"] == "docker" and card["app_port"] == APP_PORT and "sdk_version" not in card
    assert len(card["short_description"]) <= 60


def test_the_dockerfile_runs_the_readmes_install_steps(dashboard_dir):
    readme = (ROOT / "README.md").read_text()
    install = re.search(r"^## Install and run\n.*?```bash\n(.*?)```", readme, flags=re.M | re.S).group(1)
    commands = [line.strip() for line in install.splitlines() if line.strip() and line.strip() != "python app.py"]
    runs, values, cmd = dockerfile(dashboard_dir)
    assert commands and runs[-1].split(" && ") == commands
    assert " ".join(cmd) in readme.splitlines()  # the README's dashboard command, verbatim
    python = front_matter(readme)["python_version"]
    assert re.search(rf"^FROM python:{re.escape(python)}-slim$", (dashboard_dir / "Dockerfile").read_text(), re.M)
    assert values["STREAMLIT_SERVER_PORT"] == str(APP_PORT)


def test_the_dashboard_serves_its_page(dashboard_dir, hub, tmp_path):
    _, values, cmd = dockerfile(dashboard_dir)
    port = free_port()
    streamlit = {k: v for k, v in values.items() if k.startswith("STREAMLIT_")}
    streamlit.update(STREAMLIT_SERVER_PORT=str(port), STREAMLIT_SERVER_ADDRESS="127.0.0.1")
    env = space_env(hub, tmp_path, **streamlit)
    # The image's .venv/bin comes first on its PATH: here, this interpreter's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    url = f"http://127.0.0.1:{port}"
    proc = serve(cmd, env, dashboard_dir, f"{url}/_stcore/health", tmp_path / "dashboard.log")
    try:
        assert get(f"{url}/_stcore/health") == (200, "ok")
        status, page = get(f"{url}/")
        assert status == 200 and "<title>" in page
    finally:
        stop(proc)


def test_the_dashboard_page_needs_only_its_requirements(dashboard_dir, hub, tmp_path):
    refused = refused_modules(dashboard_dir / "requirements.txt")
    assert {"torch", "timm", "gradio"} <= set(refused)
    script = tmp_path / "apptest.py"
    script.write_text(APPTEST)
    proc = run(["-c", WITHOUT, json.dumps(refused), str(script)], space_env(hub, tmp_path), cwd=dashboard_dir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    page = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("PAGE "))[5:])
    assert page["exceptions"] == []
    runs = sorted(p.parent.name for p in (ROOT / "results").glob("*/metrics.json"))
    shown = " ".join(page["texts"] + page["options"])
    assert runs and all(run in shown for run in runs)


# --------------------------------------------------------------------------- refusals and the wire


def test_an_unknown_model_is_refused_before_the_space_exists(env, hub):
    proc = run(["-m", "train.space", "test-user/no-model-space", "--model", "test-user/not-pushed"], env)
    assert proc.returncode == 2 and "test-user/not-pushed is not a model repository" in proc.stderr
    assert "Traceback" not in proc.stderr and "spaces/test-user/no-model-space" not in hub.repos


def test_the_app_needs_a_model_and_a_dry_run_an_empty_folder(tmp_path, capsys):
    from train.space import cli

    assert cli(["test-user/s"]) == 2
    assert "--model" in capsys.readouterr().err
    (tmp_path / "kept.txt").write_text("mine\n")
    assert cli(["test-user/s", "--model", MODEL, "--dry-run", str(tmp_path)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]
    assert cli(["test-user/s", "--model", MODEL, "--project", str(tmp_path), "--dry-run", str(tmp_path / "o")]) == 2
    assert "a Space is built from a checkout of the project" in capsys.readouterr().err


def test_the_token_stays_in_the_authorization_header(
    deployed, dashboard_deployed, space_dir, dashboard_dir, hub, token
):
    for output in OUTPUTS:
        assert token not in output
    for request in hub.requests:
        assert token.encode() not in request.body and token not in request.path
    for folder in (space_dir, dashboard_dir):
        assert not any(token.encode() in p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert hub.unhandled == []


# --------------------------------------------------------------------------- the import analysis


def test_requirements_follow_the_imports_the_entry_reaches(tmp_path):
    """Function-level and lazy (PEP 562) imports count; TYPE_CHECKING blocks and unreached modules do not."""
    from train.spacefiles import app_requirements, third_party_imports

    lib = tmp_path / "tumorlib"
    lib.mkdir()
    (lib / "__init__.py").write_text(
        '_EXPORTS = {"load": "reader", "unused": "unused"}\n\n\ndef __getattr__(name):\n'
        "    import importlib\n\n    return getattr(importlib.import_module(f'.{_EXPORTS[name]}', __name__), name)\n"
    )
    (lib / "reader.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import scipy\n\n\ndef load():\n    import yaml\n"
    )
    (lib / "unused.py").write_text("import h5py\n")
    (tmp_path / "app.py").write_text("import json\n\nimport tumorlib\n\ntumorlib.load()\n")
    (tmp_path / "requirements.txt").write_text("# pins\nPyYAML==6.0.3\nh5py==3.16.0  # data\nscipy==1.17.1\n")
    assert third_party_imports(tmp_path, "app.py") == {"yaml"}
    assert app_requirements(tmp_path, "app.py") == (["PyYAML==6.0.3"], [])


def test_the_test_server_keeps_spaces_apart_from_models(tmp_path):
    """The Space endpoints the round trip relies on, with plain HTTP."""

    def call(method: str, url: str, payload: dict | None = None) -> tuple[int, dict, bytes]:
        body = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(url, data=body, method=method, headers={"Authorization": "Bearer good"})
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    with FakeHub(tmp_path, "good") as hub:
        create = {"name": "s", "organization": "test-user", "type": "space"}
        assert call("POST", f"{hub.url}/api/repos/create", create)[0] == 400  # a Space needs its sdk
        status, _, body = call("POST", f"{hub.url}/api/repos/create", create | {"sdk": "docker"})
        assert status == 200 and json.loads(body)["url"] == f"{hub.url}/spaces/test-user/s"
        assert call("POST", f"{hub.url}/api/repos/create", create | {"sdk": "docker"})[0] == 409
        # A model of the same name is another repo.
        assert call("POST", f"{hub.url}/api/repos/create", {"name": "s", "organization": "test-user"})[0] == 200
        info = json.loads(call("GET", f"{hub.url}/api/spaces/test-user/s")[2])
        assert info["id"] == "test-user/s" and info["sdk"] == "docker" and "modelId" not in info
        hub.commit_files("spaces/test-user/s", {"Dockerfile": b"FROM scratch\n"})
        assert call("HEAD", f"{hub.url}/spaces/test-user/s/resolve/main/Dockerfile")[0] == 200
        assert call("HEAD", f"{hub.url}/test-user/s/resolve/main/Dockerfile")[1]["X-Error-Code"] == "EntryNotFound"
        tree = json.loads(call("GET", f"{hub.url}/api/spaces/test-user/s/tree/main")[2])
        assert [e["path"] for e in tree] == [".gitattributes", "Dockerfile"]
        assert json.loads(call("GET", f"{hub.url}/api/agent-harnesses")[2])["harnesses"] == {}
        assert hub.unhandled == []
