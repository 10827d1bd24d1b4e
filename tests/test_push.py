"""``train.push`` against a local Hub (tests/hub_server.py): push, then load back with timm and tumorlib.

huggingface_hub and timm read ``HF_ENDPOINT`` and friends when they are imported, so every push and
every load runs in a subprocess with its own environment: a dummy token, an empty ``HF_HOME``, LFS
uploads (``HF_HUB_DISABLE_XET``). Nothing here touches the internet or mocks ``HfApi``.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tumorlib.fileio import save_json
from tumorlib.metrics import compute_metrics

from .conftest import FIGSHARE, LABELS3, ROOT
from .hub_server import FakeHub

REPO = "test-user/tiny-mri"
BRANCH = "exp"
PICKLES = ("pytorch_model.bin", "old.pth", "checkpoint.pt", "runs/last.ckpt")
# Every subprocess's output, so the token check can look at all of them.
OUTPUTS: list[str] = []

# Prints the probabilities each loader gives for every committed sample slice, as JSON on one line.
LOAD_SCRIPT = r"""
import json, sys
import torch
torch.set_num_threads(1)  # same kernels and reduction order in every load: results must match exactly
import timm
from huggingface_hub import hf_hub_download
import tumorlib
from tumorlib import Classifier, decode_image, load_bundle
from tumorlib.transforms import create_transform, resolve_data_config

args = json.loads(sys.argv[1])
paths = args["images"]


def timm_probs(timm_id, config):
    model = timm.create_model(timm_id, pretrained=True).eval()
    # Input size, mean and std as timm itself got them from the repo; our preprocessing switches.
    data = resolve_data_config({"pretrained_cfg": model.pretrained_cfg, "tumorlib": config["tumorlib"]})
    transform = create_transform(data)
    batch = torch.stack([transform(decode_image(p)) for p in paths])
    with torch.inference_mode():
        return torch.softmax(model(batch) / config["tumorlib"]["temperature"], dim=1).tolist()


def classifier_probs(source, revision=None):
    clf = Classifier(load_bundle(source, revision=revision), device="cpu", variant="fp32")
    return [[p[label] for label in clf.labels] for p in clf.predict_batch(paths)]


out = {}
for name, source in args["sources"].items():
    if source.startswith("hf-hub:") or not source.startswith("/"):
        repo = source.removeprefix("hf-hub:")
        config = json.load(open(hf_hub_download(repo, "config.json")))
        timm_id = f"hf-hub:{repo}"
    else:
        config = json.load(open(f"{source}/config.json"))
        timm_id = f"local-dir:{source}"
    bundle = load_bundle(source.removeprefix("hf-hub:"))
    out[name] = {
        "path": str(bundle.path),
        "config": bundle.config,
        "timm": timm_probs(timm_id, config),
        "classifier": classifier_probs(source.removeprefix("hf-hub:")),
    }
repo, revision = args["branch"]
bundle = load_bundle(repo, revision=revision)
out["branch"] = {"path": str(bundle.path), "config": bundle.config, "classifier": classifier_probs(repo, revision)}
out["errors"] = {}
for name, (source, revision) in args["failures"].items():
    try:
        load_bundle(source, revision=revision)
        out["errors"][name] = None
    except tumorlib.BundleError as err:
        out["errors"][name] = str(err)
if args["evaluate"]:
    # train.evaluate's own entry point, in this process: one torch start-up less on two shared cores.
    import traceback
    try:
        from train.evaluate import cli
        out["evaluate"] = {"rc": cli(args["evaluate"])}
    except Exception:
        out["evaluate"] = {"rc": None, "error": traceback.format_exc()}
print("RESULT " + json.dumps(out))
"""


# --------------------------------------------------------------------------- helpers and fixtures


def hub_env(endpoint: str, token: str | None, home: Path) -> dict[str, str]:
    """The environment of a subprocess that talks to ``endpoint``: nothing inherited from a real login."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE_")) and k not in ("TRANSFORMERS_OFFLINE", "PYTHONPATH")
    }
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(home),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_OFFLINE="0",
        OMP_NUM_THREADS="1",  # two shared cores: keep each subprocess to one
        PYTHONPATH=str(ROOT),
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    OUTPUTS.extend([proc.stdout, proc.stderr])
    return proc


def push(folder: Path, repo: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    return run(["-m", "train.push", str(folder), repo, *extra], env)


def result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def fake_metrics() -> dict:
    rng = np.random.default_rng(0)
    y = rng.integers(0, len(LABELS3), 30)
    probs = rng.dirichlet(np.ones(len(LABELS3)), 30)
    return compute_metrics(y, probs, LABELS3, [f"p{i // 2}" for i in range(30)], n_bootstrap=20)


def images() -> list[str]:
    paths = sorted(str(p) for p in (FIGSHARE / "images").glob("*.jpg"))
    assert paths, "the committed sample slices are missing"
    return paths


@pytest.fixture(scope="module")
def token() -> str:
    return "hf_test_" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, token):
    with FakeHub(tmp_path_factory.mktemp("hub"), token) as server:
        yield server


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hf_home")


@pytest.fixture(scope="module")
def env(hub, token, home) -> dict[str, str]:
    return hub_env(hub.url, token, home)


@pytest.fixture(scope="module")
def marker() -> bytes:
    """Content of the pickles placed in the folder: must never reach the server."""
    return b"PICKLED-WEIGHTS-" + secrets.token_hex(16).encode()


@pytest.fixture(scope="module")
def folder(tiny_bundle, tmp_path_factory, marker) -> Path:
    """A copy of the tiny bundle with pickled weights and a stray file next to it."""
    out = tmp_path_factory.mktemp("push") / "tiny"
    shutil.copytree(tiny_bundle, out)
    for name in PICKLES:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(marker)
    (out / "notes.txt").write_text("scratch notes\n")
    return out


@pytest.fixture(scope="module")
def pushed(folder, env, hub) -> subprocess.CompletedProcess:
    return push(folder, REPO, env)


@pytest.fixture(scope="module")
def first_head(pushed, hub) -> str | None:
    """Where main pointed after the first push (taken before the second one runs)."""
    return hub.repos[REPO].branches["main"] if REPO in hub.repos else None


@pytest.fixture(scope="module")
def evaluated(folder, tmp_path_factory) -> tuple[Path, dict]:
    """The same model with evaluation results and a README without Hub metadata."""
    out = tmp_path_factory.mktemp("push2") / "tiny"
    shutil.copytree(folder, out)
    metrics = fake_metrics()
    save_json(metrics, out / "metrics.json")
    (out / "history.csv").write_text("epoch,train_loss,val_loss\n1,1.1,1.2\n")
    (out / "predictions.csv").write_text("id,path,patient,true_label,pred_label\nx,x.jpg,p1,glioma,glioma\n")
    (out / "README.md").write_text("# my run\n\nnotes without metadata\n")
    return out, metrics


@pytest.fixture(scope="module")
def pushed_again(evaluated, env, first_head) -> subprocess.CompletedProcess:
    """A second push to the existing repo, on a new branch, with results added."""
    return push(evaluated[0], REPO, env, "--revision", BRANCH, "--commit-message", "add evaluation results")


@pytest.fixture(scope="module")
def evaluation_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("evaluate")


@pytest.fixture(scope="module")
def loaded(folder, env, pushed, pushed_again, evaluation_dir) -> dict:
    """One fresh process loads the pushed model every way, the local folder for reference, and runs
    ``train.evaluate --model REPO`` (where that entry point exists)."""
    evaluate = None
    if (ROOT / "train" / "evaluate.py").is_file():
        evaluate = [
            "--model",
            REPO,
            "--data",
            str(FIGSHARE),
            "--variant",
            "fp32",
            "--out",
            str(evaluation_dir / "metrics.json"),
        ]
        evaluate += ["--predictions", str(evaluation_dir / "predictions.csv"), "--bootstrap", "20", "--no-progress"]
    args = {
        "images": images(),
        "sources": {"hub": f"hf-hub:{REPO}", "local": str(folder)},
        "branch": [REPO, BRANCH],
        "failures": {"missing_repo": ["test-user/does-not-exist", None], "missing_revision": [REPO, "no-such-branch"]},
        "evaluate": evaluate,
    }
    return result(run(["-c", LOAD_SCRIPT, json.dumps(args)], env))


# --------------------------------------------------------------------------- the round trip


def test_push_succeeds_and_prints_the_url(pushed, hub):
    assert pushed.returncode == 0, pushed.stderr[-4000:]
    assert pushed.stdout.strip().splitlines()[-1] == f"{hub.url}/{REPO}"
    assert "Traceback" not in pushed.stderr


def test_push_uploads_exactly_the_bundle(pushed, hub, folder):
    files = hub.files(REPO)
    assert set(files) == {".gitattributes", "model.safetensors", "config.json", "README.md"}
    assert files["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert files["config.json"] == (folder / "config.json").read_bytes()
    # The weights went through LFS, the config inline: as on the real Hub.
    lfs = [json.loads(r.body) for r in hub.requests_to(f"/{REPO}.git/info/lfs/objects/batch")]
    assert {o["size"] for batch in lfs for o in batch["objects"]} == {(folder / "model.safetensors").stat().st_size}
    # The folder had no README: a card with Hub metadata was generated for the repo, not written locally.
    readme = files["README.md"].decode()
    assert readme.startswith("---\nlibrary_name: timm\n")
    assert f'timm.create_model("hf-hub:{REPO}", pretrained=True)' in readme
    assert "not been evaluated" in readme
    assert not (folder / "README.md").exists()


def test_pickled_weights_are_never_uploaded(pushed, pushed_again, hub, marker):
    assert pushed.returncode == 0
    warning = next(line for line in pushed.stderr.splitlines() if line.startswith("warning: not uploading pickled"))
    for name in PICKLES:
        assert name in warning
    assert "notes.txt" in pushed.stderr  # left out, and said so
    for revision in ("main", BRANCH):
        assert not [p for p in hub.files(REPO, revision) if p.endswith(PICKLES)]
    pickle_suffixes = (".bin", ".pth", ".pt", ".ckpt")
    for request in hub.requests:
        assert not request.path.split("?")[0].endswith(pickle_suffixes), request.path
        assert marker not in request.body
        for name in PICKLES:
            assert name.encode() not in request.body, request.path
    assert not any(marker in blob for blob in hub.stored_blobs())


def test_pushing_again_to_a_branch(pushed_again, first_head, evaluated, hub):
    folder, metrics = evaluated
    assert pushed_again.returncode == 0, pushed_again.stderr[-4000:]
    assert pushed_again.stdout.strip().splitlines()[-1] == f"{hub.url}/{REPO}/tree/{BRANCH}"
    assert "README.md has no Hub metadata" in pushed_again.stderr
    repo = hub.repos[REPO]
    # The repo existed (create_repo answered 409 and exist_ok let it be); main did not move.
    assert first_head is not None and repo.branches["main"] == first_head
    assert repo.commits[repo.branches[BRANCH]].summary == "add evaluation results"
    files = hub.files(REPO, BRANCH)
    assert set(files) == {
        ".gitattributes",
        "model.safetensors",
        "config.json",
        "README.md",
        "metrics.json",
        "history.csv",
        "predictions.csv",
    }
    for name in ("metrics.json", "history.csv", "predictions.csv"):
        assert files[name] == (folder / name).read_bytes()
    # The generated card carries the evaluation, exactly; the local README is untouched.
    card = files["README.md"].decode()
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    values = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert values["accuracy"] == metrics["accuracy"] and values["f1"] == metrics["macro"]["f1"]
    assert (folder / "README.md").read_text() == "# my run\n\nnotes without metadata\n"
    # The weights were already on the Hub: sent once in all.
    assert len(hub.requests_to("/_lfs-storage/", method="PUT")) == 1


def test_hub_loads_give_the_local_probabilities(loaded, home):
    hub, local = loaded["hub"], loaded["local"]
    # Downloaded into the HF cache of the subprocess, not read from the local folder.
    assert Path(hub["path"]).is_relative_to(home) and not Path(local["path"]).is_relative_to(home)
    assert hub["config"] == local["config"]
    assert hub["config"]["label_names"] == LABELS3
    n = len(images())
    for way in ("timm", "classifier"):
        assert len(hub[way]) == n and all(len(p) == len(LABELS3) for p in hub[way])
        assert hub[way] == local[way], way  # bit-identical
    # timm on its own (weights + pretrained_cfg from the repo) agrees with tumorlib's Classifier.
    for a, b in zip(hub["timm"], hub["classifier"], strict=True):
        assert a == pytest.approx(b, abs=1e-6)
    # The branch loads too and holds the same model.
    assert loaded["branch"]["config"] == local["config"]
    assert loaded["branch"]["classifier"] == local["classifier"]


def test_missing_repo_gives_a_clear_bundle_error(loaded):
    errors = loaded["errors"]
    assert "test-user/does-not-exist is neither a local folder nor a model repository" in errors["missing_repo"]
    assert errors["missing_revision"] is not None and REPO in errors["missing_revision"]


def test_evaluate_a_pushed_model(loaded, evaluation_dir):
    if "evaluate" not in loaded:
        pytest.skip("train.evaluate is not there yet")
    assert loaded["evaluate"]["rc"] == 0, loaded["evaluate"].get("error")
    metrics = json.loads((evaluation_dir / "metrics.json").read_text())
    assert metrics["n"] == len(images()) and metrics["labels"] == LABELS3
    # Same probabilities as the local model, image by image (the CSV keeps 6 decimals).
    local = dict(zip(images(), loaded["local"]["classifier"], strict=True))
    with (evaluation_dir / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(local)
    for row in rows:
        expected = local[str(Path(row["path"]).resolve())]
        assert [float(row[f"prob_{c}"]) for c in LABELS3] == pytest.approx(expected, abs=2e-6)


# --------------------------------------------------------------------------- refusals and errors


def test_damaged_weights_are_refused_before_any_upload(tiny_bundle, tmp_path, env, hub):
    folder = tmp_path / "damaged"
    shutil.copytree(tiny_bundle, folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, one flipped byte: only the checksum can tell
    weights.write_bytes(bytes(data))
    before = len(hub.requests)
    proc = push(folder, "test-user/damaged", env)
    assert proc.returncode == 2
    assert "SHA-256" in proc.stderr and "Traceback" not in proc.stderr
    # Only the token check reached the server: no repo, no upload.
    assert [r.path for r in hub.requests[before:]] == ["/api/whoami-v2"]
    assert "test-user/damaged" not in hub.repos


def test_no_token_is_a_clear_error(folder, hub, tmp_path):
    proc = push(folder, "test-user/no-token", hub_env(hub.url, None, tmp_path / "empty_home"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no Hugging Face token") and "Traceback" not in proc.stderr
    assert "test-user/no-token" not in hub.repos


def test_rejected_token_is_a_clear_error(folder, hub, tmp_path):
    wrong = "hf_wrong_" + secrets.token_hex(16)
    proc = push(folder, "test-user/bad-token", hub_env(hub.url, wrong, tmp_path / "home"))
    assert proc.returncode == 1
    assert "token was rejected" in proc.stderr and "Traceback" not in proc.stderr
    assert wrong not in proc.stdout + proc.stderr
    assert "test-user/bad-token" not in hub.repos


def test_unreachable_hub_is_a_clear_error(folder, token, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the push: nothing listens there
    proc = push(folder, REPO, hub_env(f"http://127.0.0.1:{port}", token, tmp_path / "home"))
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "could not reach the Hugging Face Hub" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_token_never_leaves_the_authorization_header(
    pushed, pushed_again, loaded, hub, token, home, folder, evaluated
):
    assert pushed.returncode == pushed_again.returncode == 0
    for output in OUTPUTS:
        assert token not in output
    needle = token.encode()
    assert not any(needle in blob for blob in hub.stored_blobs())
    sent = 0
    for request in hub.requests:
        assert needle not in request.body and token not in request.path
        for name, value in request.headers.items():
            if name == "authorization":
                sent += value == f"Bearer {token}"
            else:
                assert token not in value, name
    assert sent > 0  # it was used, in the one place it belongs
    for root in (home, folder, evaluated[0]):
        for path in root.rglob("*"):
            assert not path.is_file() or needle not in path.read_bytes(), path


def test_the_client_used_only_known_endpoints(pushed, pushed_again, loaded, hub):
    assert hub.unhandled == []
    # The pre-signed storage PUT carries no token, like an S3 upload.
    puts = hub.requests_to("/_lfs-storage/", method="PUT")
    assert puts and all("authorization" not in r.headers for r in puts)


# --------------------------------------------------------------------------- checks that need no server


def test_prepare_upload_refuses_a_folder_without_config(tiny_bundle, tmp_path):
    from train.push import RefusedError, prepare_upload

    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    (folder / "config.json").unlink()
    with pytest.raises(RefusedError, match="no config.json"):
        prepare_upload(folder, REPO)
    with pytest.raises(RefusedError, match="not a folder"):
        prepare_upload(tmp_path / "nothing", REPO)


def test_prepare_upload_refuses_damaged_extra_tensors_and_foreign_metrics(tiny_bundle, tmp_path):
    import torch

    from train.push import RefusedError, prepare_upload
    from tumorlib.bundle import save_extra
    from tumorlib.fileio import save_json

    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    save_extra(folder, "features", {"mean": torch.zeros(4)})
    assert "features.safetensors" in prepare_upload(folder, REPO).files
    (folder / "features.safetensors").write_bytes(b"not tensors")
    with pytest.raises(RefusedError, match="features.safetensors"):
        prepare_upload(folder, REPO)
    (folder / "features.safetensors").unlink()

    save_json({"labels": ["a", "b", "c"], "accuracy": 0.5}, folder / "metrics.json")
    with pytest.raises(RefusedError, match="another model"):
        prepare_upload(folder, REPO)


def test_prepare_upload_readme_handling(tiny_bundle, tmp_path):
    from train.push import prepare_upload
    from tumorlib.modelcard import model_card

    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    config = json.loads((folder / "config.json").read_text())

    (folder / "README.md").write_text("# my notes\n")  # no metadata: replaced in the upload, kept locally
    upload = prepare_upload(folder, REPO)
    assert isinstance(upload.files["README.md"], bytes) and upload.files["README.md"].startswith(b"---\n")
    assert any("no Hub metadata" in w for w in upload.warnings)
    assert (folder / "README.md").read_text() == "# my notes\n"

    (folder / "README.md").write_text("---\nlicense: mit\n---\n# hand-written card\n")  # kept as it is
    assert prepare_upload(folder, REPO).files["README.md"] == folder / "README.md"

    (folder / "README.md").write_text(model_card(config, None))  # generated locally: regenerated for the repo
    readme = prepare_upload(folder, REPO).files["README.md"]
    assert isinstance(readme, bytes) and f'Classifier.from_pretrained("{REPO}")'.encode() in readme


def test_repo_id_must_have_a_namespace():
    from train.push import get_args_parser

    parser = get_args_parser()
    assert parser.parse_args(["dir", REPO]).repo_id == REPO
    for bad in ("tiny-mri", "a/b/c", "/abs", "user/--x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["dir", bad])


def test_the_test_server_speaks_the_hub_api(tmp_path):
    """The parts of the fake Hub the round trip does not reach, checked with plain HTTP."""
    import base64
    import urllib.error
    import urllib.request

    def call(method: str, url: str, body: bytes | None = None, auth: str | None = "good") -> tuple[int, dict, bytes]:
        headers = {"Authorization": f"Bearer {auth}"} if auth else {}
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    with FakeHub(tmp_path, "good") as hub:
        create = json.dumps({"name": "r", "organization": "test-user"}).encode()
        assert call("POST", f"{hub.url}/api/repos/create", create, auth=None)[0] == 401
        assert call("POST", f"{hub.url}/api/repos/create", create, auth="bad")[0] == 401
        assert call("POST", f"{hub.url}/api/repos/create", create)[0] == 200
        status, _, body = call("POST", f"{hub.url}/api/repos/create", create)
        assert status == 409 and json.loads(body)["url"] == f"{hub.url}/test-user/r"
        commit = b"\n".join(
            json.dumps(line).encode()
            for line in (
                {"key": "header", "value": {"summary": "add"}},
                {
                    "key": "file",
                    "value": {"path": "sub/a.txt", "content": base64.b64encode(b"hi").decode(), "encoding": "base64"},
                },
            )
        )
        assert call("POST", f"{hub.url}/api/models/test-user/r/commit/main", commit, auth=None)[0] == 401
        assert call("POST", f"{hub.url}/api/models/test-user/r/commit/main", commit)[0] == 200

        status, headers, _ = call("HEAD", f"{hub.url}/test-user/r/resolve/main/sub/a.txt", auth=None)
        assert status == 200 and headers["Content-Length"] == "2" and headers["X-Repo-Commit"]
        assert headers["ETag"] == '"32f95c0d1244a78b2be1bab8de17906fabb2c4a8"'  # git hash-object of "hi"
        status, headers, _ = call("HEAD", f"{hub.url}/test-user/r/resolve/main/missing.txt")
        assert status == 404 and headers["X-Error-Code"] == "EntryNotFound" and headers["X-Repo-Commit"]
        assert call("HEAD", f"{hub.url}/test-user/r/resolve/nope/sub/a.txt")[1]["X-Error-Code"] == "RevisionNotFound"
        assert call("GET", f"{hub.url}/api/models/test-user/none")[1]["X-Error-Code"] == "RepoNotFound"

        tree = json.loads(call("GET", f"{hub.url}/api/models/test-user/r/tree/main")[2])
        assert [(e["type"], e["path"]) for e in tree] == [("file", ".gitattributes"), ("directory", "sub")]
        tree = json.loads(call("GET", f"{hub.url}/api/models/test-user/r/tree/main?recursive=true")[2])
        assert ("file", "sub/a.txt") in [(e["type"], e["path"]) for e in tree]
        info = json.loads(call("POST", f"{hub.url}/api/models/test-user/r/paths-info/main", b"paths=sub%2Fa.txt")[2])
        assert info == [
            {"type": "file", "oid": "32f95c0d1244a78b2be1bab8de17906fabb2c4a8", "size": 2, "path": "sub/a.txt"}
        ]
        model = json.loads(call("GET", f"{hub.url}/api/models/test-user/r/revision/main?blobs=true")[2])
        assert {s["rfilename"] for s in model["siblings"]} == {".gitattributes", "sub/a.txt"}
        assert model["sha"] == hub.repos["test-user/r"].branches["main"]
        assert hub.unhandled == []
