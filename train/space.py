"""Deploy the project's app, or its results dashboard, as a Hugging Face Space.

    python -m train.space OWNER/SPACE --model OWNER/MODEL        # the Gradio app serving a pushed model
    python -m train.space OWNER/SPACE --dashboard                # the results dashboard (a Docker Space)
    python -m train.space OWNER/SPACE --model OWNER/MODEL --dry-run DIR   # write the files, upload nothing

The Space holds the code and the example slices, never weights: the app downloads ``OWNER/MODEL``
(pushed with ``python -m train.push``) when it starts, the model id written into the Space's own
``space_app.py``, so no Space variable is needed. What goes in is listed in :mod:`train.spacefiles`.

Order: the token is checked (``HF_TOKEN`` or ``hf auth login``; never printed or written), the files are
gathered from the project checkout, the model is looked up on the Hub, and only then is the Space created
(or reused) and its content replaced in one commit; files an earlier deploy left that are no longer part
of it are deleted in the same commit. ``HF_ENDPOINT`` selects the Hub. Exit codes: 0 deployed (or
written), 1 the Hub could not be used (no token, token rejected, network), 2 refused (project files
missing, model not on the Hub, dry-run folder not empty).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import RepositoryNotFoundError

from .push import CONFIG_NAME, WEIGHTS_NAME, HubError, RefusedError, check_token, hub_error, repo_id_arg, send
from .spacefiles import ProjectError, SpaceFiles, dashboard_space, gradio_space

#: The checkout this module belongs to: where the Space's files come from unless --project says otherwise.
PROJECT = Path(__file__).resolve().parent.parent
GITATTRIBUTES = ".gitattributes"  # the Hub's own file of every repo: kept


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Deploy the Gradio app (or, with --dashboard, the results dashboard) as a Hugging Face Space.",
        add_help=add_help,
    )
    p.add_argument("space_id", type=repo_id_arg, help="Space repo, namespace/name (created if missing)")
    p.add_argument("--model", type=repo_id_arg, default=None, help="Hub model repo the app serves (train.push's)")
    p.add_argument("--dashboard", action="store_true", help="deploy the results dashboard as a Docker Space instead")
    p.add_argument(
        "--dry-run", type=Path, default=None, metavar="DIR", help="write the Space's files to DIR, no upload"
    )
    p.add_argument("--private", action="store_true", help="create the Space as private (ignored if it exists)")
    p.add_argument("--project", type=Path, default=PROJECT, help="the project checkout to deploy (default: this one)")
    p.add_argument("--commit-message", default=None, help="commit summary")
    return p


def space_files(args: argparse.Namespace, endpoint: str) -> SpaceFiles:
    """The Space's content for the parsed command line; raises ProjectError."""
    project = args.project.resolve()
    if args.dashboard:
        return dashboard_space(project, args.space_id, args.model, endpoint)
    return gradio_space(project, args.space_id, args.model, endpoint)


def check_model(api: HfApi, model_id: str) -> list[str]:
    """Refuse (RefusedError) a model the Space could not load from the Hub; returns warnings."""
    try:
        info = api.model_info(model_id)
    except RepositoryNotFoundError:
        raise RefusedError(
            f"{model_id} is not a model repository on {api.endpoint}, or the token cannot see it: "
            "push the bundle first (python -m train.push MODEL_DIR OWNER/MODEL)."
        ) from None
    except Exception as err:  # noqa: BLE001 - see train.push.hub_error
        raise hub_error(err, f"look up the model {model_id}", api, model_id) from None
    names = {s.rfilename for s in info.siblings or []}
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if name not in names]
    if missing:
        raise RefusedError(f"{model_id} has no {' or '.join(missing)}: not a model bundle pushed by train.push.")
    if info.private:
        return [
            f"{model_id} is private: the Space can load it only with a token that can read it, set as the "
            "Space secret HF_TOKEN."
        ]
    return []


def deploy(api: HfApi, content: SpaceFiles, space_id: str, *, private: bool = False, message: str | None = None) -> str:
    """Create the Space if needed and replace its content in one commit; returns the Space's URL."""
    step = f"create the Space {space_id}"
    try:
        api.create_repo(space_id, repo_type="space", space_sdk=content.sdk, private=private or None, exist_ok=True)
        step = f"list the files of the Space {space_id}"
        stale = sorted(set(api.list_repo_files(space_id, repo_type="space")) - set(content.files) - {GITATTRIBUTES})
        step = f"upload to the Space {space_id}"
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=src if isinstance(src, bytes) else str(src))
            for name, src in sorted(content.files.items())
        ]
        operations += [CommitOperationDelete(path_in_repo=name) for name in stale]
        what = "results dashboard" if content.sdk == "docker" else "app"
        api.create_commit(space_id, operations, commit_message=message or f"Deploy the {what}", repo_type="space")
    except Exception as err:  # noqa: BLE001 - see train.push.hub_error
        raise hub_error(err, step, api, space_id) from None
    return f"{api.endpoint}/spaces/{space_id}"


def dry_run(content: SpaceFiles, folder: Path) -> None:
    """Write the Space's files to an empty or new ``folder`` and list them; raises RefusedError."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise RefusedError(f"{folder} exists and is not an empty folder: give a new or empty one.")
    content.write(folder)
    for name in sorted(content.files):
        print(f"{content.size(name):>10,}  {name}")
    print(f"{len(content.files)} files, {content.total_size():,} bytes, written to {folder}")


def main(args: argparse.Namespace) -> int:
    api = HfApi()  # endpoint from HF_ENDPOINT, token from HF_TOKEN or the saved login
    if not args.dashboard and not args.model:
        print("error: the app needs --model OWNER/MODEL (a bundle pushed with python -m train.push)", file=sys.stderr)
        return 2
    user = None
    if args.dry_run is None:
        try:
            user = check_token(api)
        except HubError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    try:
        content = space_files(args, api.endpoint)
        warnings = check_model(api, args.model) if args.model and args.dry_run is None else []
        if args.dry_run is not None:
            dry_run(content, args.dry_run)
            return 0
    except (ProjectError, RefusedError) as err:
        print(f"error: refusing to deploy {args.space_id}: {err}", file=sys.stderr)
        return 2
    except HubError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    size = content.total_size() / 2**20
    return send(
        warnings,
        content.notes,
        f"deploying as {user}: {len(content.files)} files, {size:.1f} MiB, to the Space {args.space_id}",
        lambda: deploy(api, content, args.space_id, private=args.private, message=args.commit_message),
    )


def cli(argv: list[str] | None = None) -> int:
    return main(get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
