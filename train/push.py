"""Publish a model bundle folder to the Hugging Face Hub.

    python -m train.push runs/resnet50 your-name/brain-mri-resnet50 [--private] [--revision BRANCH]

Only what a published model needs goes up: the safetensors weights, ``config.json``, the evaluation
results that exist (``metrics.json``, ``history.csv``, ``predictions.csv``) and a model card. Pickled
weights (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) never do.

Order: the token is checked (``HF_TOKEN`` or ``hf auth login``; never printed or written), then the
folder (config present, weights matching their recorded SHA-256 and loading into the architecture),
and only then is the repo created and everything uploaded in one commit. Exit codes: 0 pushed, 1 the
Hub could not be used (no token, token rejected, network), 2 the folder was refused.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from huggingface_hub import CommitOperationAdd, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

# The HTTP client huggingface_hub uses and re-raises transport failures of, as it exports it for
# downstream code (httpx2 in huggingface_hub 2.x): never a package of its own to pin beside the Hub's.
from huggingface_hub.utils import httpx as hub_http

from tumorlib.fileio import sha256_file
from tumorlib.results.names import HISTORY_CSV, METRICS_JSON, PREDICTIONS_CSV

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
RESULT_FILES = (METRICS_JSON, HISTORY_CSV, PREDICTIONS_CSV)
README = "README.md"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Keys of config.json's tumorlib section that are machinery; the rest (training recipe, split) is
# what the card shows as the recipe.
_SECTION_KEYS = {"format_version", "preprocess", "temperature", "weights_dtype", "files", "inference"}


class RefusedError(Exception):
    """The folder cannot be published as it is (exit code 2)."""


class HubError(Exception):
    """The Hub could not be used: no token, token rejected, network down (exit code 1)."""


@dataclass
class Upload:
    """What goes to the Hub: repo path -> local file or generated content, plus what to tell the user."""

    files: dict[str, Path | bytes]
    architecture: str
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Push a tumorlib model bundle to the Hugging Face Hub.", add_help=add_help)
    p.add_argument("model_dir", type=Path, help="bundle folder (model.safetensors + config.json)")
    p.add_argument("repo_id", type=repo_id_arg, help="Hub model repo, namespace/name (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo as private (ignored if it exists)")
    p.add_argument("--revision", default=None, help="branch to push to (created from main if missing)")
    p.add_argument("--commit-message", default=None, help="commit summary (default: 'Upload <arch> model bundle')")
    return p


def repo_id_arg(text: str) -> str:
    """argparse type: a Hub repo id ``namespace/name``."""
    if not _REPO_ID.match(text) or "--" in text or ".." in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a Hub repo id of the form namespace/name")
    return text


def prepare_upload(folder: Path, repo_id: str) -> Upload:
    """Check the bundle and list what to upload; raises RefusedError when it must not be published."""
    if not folder.is_dir():
        raise RefusedError(f"{folder} is not a folder.")
    if not (folder / CONFIG_NAME).is_file():
        raise RefusedError(f"{folder} has no {CONFIG_NAME}: not a model bundle.")
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        recorded = dict(config["tumorlib"].get("files") or {}) if isinstance(config.get("tumorlib"), dict) else {}
    except (OSError, ValueError, TypeError, AttributeError) as err:  # ValueError covers bad JSON and UTF-8
        raise RefusedError(f"{folder / CONFIG_NAME} is not a readable JSON object ({err}).") from None
    upload = Upload(files={}, architecture=str(config.get("architecture", "model")))
    # Checksums first: a damaged file is refused without waiting for torch to load.
    for name, info in sorted(recorded.items()):
        expected = (info or {}).get("sha256") if isinstance(info, dict) else None
        if (folder / name).is_file() and expected and sha256_file(folder / name) != expected:
            raise RefusedError(
                f"{folder / name} does not match the SHA-256 recorded in {CONFIG_NAME}: the file is damaged, "
                "truncated or was replaced."
            )
        if name != WEIGHTS_NAME and not (folder / name).is_file():
            upload.warnings.append(f"{CONFIG_NAME} lists {name}, which is not in the folder: not uploaded.")
    if not (recorded.get(WEIGHTS_NAME) or {}).get("sha256"):
        upload.warnings.append(f"{CONFIG_NAME} records no SHA-256 for {WEIGHTS_NAME}: downloads cannot be checked.")

    # tumorlib (torch, timm) only now: a missing or rejected token is reported without loading torch.
    from tumorlib.bundle import load_bundle
    from tumorlib.errors import TumorlibError
    from tumorlib.fileio import load_json

    try:
        # The weights load into the architecture (after tumorlib's own checksum test): what the Hub gets works.
        bundle = load_bundle(folder, verify=True)
    except TumorlibError as err:
        raise RefusedError(str(err)) from None
    for path in sorted(folder.glob("*.safetensors")):
        if path.name != WEIGHTS_NAME:
            _check_safetensors(path)
        upload.files[path.name] = path
    upload.files[CONFIG_NAME] = folder / CONFIG_NAME

    metrics = None
    if (folder / METRICS_JSON).is_file():
        try:
            metrics = load_json(folder / METRICS_JSON)
        except (OSError, ValueError) as err:
            raise RefusedError(f"{folder / 'metrics.json'} is not readable JSON ({err}).") from None
        if "labels" in metrics and list(metrics["labels"]) != bundle.labels:
            raise RefusedError(
                f"metrics.json is for labels {metrics['labels']}, the model has {bundle.labels}: "
                "it belongs to another model."
            )
    for name in RESULT_FILES:
        if (folder / name).is_file():
            upload.files[name] = folder / name

    upload.files[README] = _readme(folder / README, config, metrics, repo_id, upload)

    pickles = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        upload.warnings.append(
            f"not uploading pickled weights ({', '.join(pickles)}): unpickling can run code, so only "
            ".safetensors weights are published."
        )
    others = sorted(
        p.name + ("/" if p.is_dir() else "")
        for p in folder.iterdir()
        if p.name not in upload.files and p.suffix.lower() not in PICKLE_SUFFIXES and not p.name.startswith(".")
    )
    if others:
        upload.notes.append(f"not part of a published bundle, left out: {', '.join(others)}")
    return upload


def _check_safetensors(path: Path) -> None:
    """Extra tensors (e.g. feature statistics) must be readable safetensors too, checksum or not."""
    import safetensors

    try:
        with safetensors.safe_open(str(path), framework="numpy"):
            pass
    except (safetensors.SafetensorError, OSError, ValueError) as err:
        raise RefusedError(f"{path.name} is damaged or not a safetensors file ({err}).") from None


def _readme(path: Path, config: dict, metrics: dict | None, repo_id: str, upload: Upload) -> Path | bytes:
    """The folder's README if it is a hand-written card with Hub metadata, else a generated card."""
    from tumorlib.modelcard import has_front_matter, is_generated, model_card

    text = None
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
            metadata = has_front_matter(text)
        except (UnicodeDecodeError, ValueError) as err:
            raise RefusedError(f"{path}: {err}") from None
        if metadata and not is_generated(text):
            return path
        if not metadata:
            upload.warnings.append(
                f"{README} has no Hub metadata (YAML front matter): uploading a generated model card instead "
                "(the local file is left as it is)."
            )
    section = config.get("tumorlib") or {}
    extra = {k: v for k, v in section.items() if k not in _SECTION_KEYS}
    return model_card(config, metrics, repo_id=repo_id, extra=extra).encode("utf-8")


def check_token(api: HfApi) -> str:
    """The user name the token belongs to; raises HubError when there is no usable token."""
    if get_token() is None:
        raise HubError("no Hugging Face token: set HF_TOKEN or run `hf auth login` with a token that has write access.")
    try:
        return str(api.whoami()["name"])
    except Exception as err:  # noqa: BLE001 - see hub_error
        raise hub_error(err, "check the Hugging Face token", api, "") from None


def push(
    api: HfApi,
    upload: Upload,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    message: str | None = None,
) -> str:
    """Create the repo (and branch) if needed and commit the files in one go; returns the repo's URL."""
    step = f"create the repository {repo_id}"
    try:
        api.create_repo(repo_id, private=private or None, exist_ok=True)
        if revision and revision != "main":
            step = f"create the branch {revision!r} of {repo_id}"
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        step = f"upload to {repo_id}"
        operations = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=src if isinstance(src, bytes) else str(src))
            for name, src in upload.files.items()
        ]
        api.create_commit(
            repo_id,
            operations,
            commit_message=message or f"Upload {upload.architecture} model bundle",
            revision=revision,
        )
    except Exception as err:  # noqa: BLE001 - see hub_error
        raise hub_error(err, step, api, repo_id) from None
    url = f"{api.endpoint}/{repo_id}"
    return url if not revision or revision == "main" else f"{url}/tree/{quote(revision, safe='')}"


def hub_error(err: Exception, step: str, api: HfApi, repo_id: str) -> HubError:
    """One line for the user: what failed, the likely reason, the Hub's own words.

    Every failure of a Hub call lands here, whatever its type (HTTP and transport errors, LFS uploads
    wrapped in RuntimeError, a malformed answer): the user needs the reason, not a traceback.
    """
    if isinstance(err, hub_http.TransportError):
        return HubError(f"could not reach the Hugging Face Hub at {api.endpoint} to {step} ({err}).")
    if not isinstance(err, HfHubHTTPError):
        cause = f" ({_first_line(err.__cause__)})" if err.__cause__ is not None else ""
        return HubError(f"could not {step}: {type(err).__name__}: {_first_line(err)}{cause}")
    detail = _first_line(err)
    status = err.response.status_code if err.response is not None else None
    if status == 401 and not isinstance(err, RepositoryNotFoundError):
        hint = "the token was rejected; check HF_TOKEN or run `hf auth login` again"
    elif status == 402:
        hint = "the Hub asks for a paid plan to create this repo (a Gradio or Docker Space on free hardware needs PRO)"
    elif status == 403:
        hint = f"the token may not write to {repo_id} (it needs write access to that namespace)"
    elif isinstance(err, RepositoryNotFoundError):
        hint = f"{repo_id} was not found, or the token cannot see it"
    else:
        hint = f"the Hub answered HTTP {status}"
    return HubError(f"could not {step}: {hint}. The Hub said: {detail}")


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def main(args: argparse.Namespace) -> int:
    api = HfApi()  # endpoint from HF_ENDPOINT, token from HF_TOKEN or the saved login
    try:
        user = check_token(api)
    except HubError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        upload = prepare_upload(args.model_dir, args.repo_id)
    except RefusedError as err:
        print(f"error: refusing to push {args.model_dir}: {err}", file=sys.stderr)
        return 2
    return send(
        upload.warnings,
        upload.notes,
        f"pushing as {user}: {', '.join(sorted(upload.files))}",
        lambda: push(
            api, upload, args.repo_id, private=args.private, revision=args.revision, message=args.commit_message
        ),
    )


def send(warnings: list[str], notes: list[str], banner: str, upload: Callable[[], str]) -> int:
    """Print what the user should know before an upload, run it, print its URL; the exit code (1: Hub error)."""
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(banner)
    try:
        url = upload()
    except HubError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(url)
    return 0


def cli(argv: list[str] | None = None) -> int:
    return main(get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
