"""Ways to run a bundle's forward pass, and the choice of the fastest one that keeps fp32's answers.

Every engine returns the logits, the pooled pre-logit features, the last feature map, the pooled
outputs of earlier stages and the feature map of the stride-16 stage from one forward pass, so the
not-an-MRI gate (:mod:`tumorlib.gate`), the tumour map (:mod:`tumorlib.localise`) and Grad-CAM for
models with an average-pool + linear head (:mod:`tumorlib.explain`) cost no second pass. Grad-CAM++,
and Grad-CAM of any other head, needs gradients: it runs on the eager float32 model.
Variants:

- ``fp32``: eager PyTorch, float32, the reference every other variant is checked against;
- ``channels_last``: the same in NHWC memory layout (oneDNN's preferred layout for convolutions);
- ``bf16``: autocast to bfloat16 + channels_last, worth it only where the CPU has native bf16 (AMX/AVX512-BF16);
- ``compile``: ``torch.compile`` of the fp32 model (slow to start, so never chosen at start-up);
- ``onnx`` / ``onnx-int8``: ONNX Runtime on an export of the model (float32, or int8 weights and
  activations calibrated on real slices); needs ``onnxruntime`` and ``onnx``.

A variant is only a win if it keeps the predictions: :func:`agrees` asks for the same top class and
no calibrated probability more than :data:`TOLERANCE` away from fp32's on real images.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

VARIANTS = ("fp32", "channels_last", "bf16", "compile", "onnx", "onnx-int8")
#: Variants cheap enough to try when an app starts (``compile`` takes tens of seconds).
STARTUP_VARIANTS = ("fp32", "channels_last", "bf16", "onnx", "onnx-int8")
#: Same answer: same top class, and no probability further than this from fp32's.
TOLERANCE = 0.01
ONNX_OPSET = 17
#: Bumped whenever the exported graph's outputs change, so cached exports are rebuilt.
EXPORT_FORMAT = 4
#: How many stages before the last one report their average-pooled output (for the gate).
EARLY_STAGES = 2
#: An export's temporary file older than this is stale even if its pid runs (an export takes about a minute;
#: a pid may have been reused).
STALE_TEMP_SECONDS = 3600
#: Temporary files the cache may hold: an export's or quantisation's ``.<name>.<pid>.tmp``, and the probe
#: that checks the folder is writable (``tmpXXXXXXXX``).
_EXPORT_TEMP = re.compile(r"^\..+\.(\d+)\.tmp$")
_PROBE_TEMP = re.compile(r"^tmp[a-z0-9_]{8}$")
_SWEPT: set[Path] = set()


class Outputs(NamedTuple):
    """One forward pass: logits (N, K), pooled features (N, D), last feature map (N, D, h, w), the
    average-pooled outputs of the :data:`EARLY_STAGES` stages before the last, concatenated (N, S), and
    the feature map of stage :attr:`Engine.grid_stage` (N, C, h', w'; the tumour-map head's input)."""

    logits: torch.Tensor
    features: torch.Tensor
    maps: torch.Tensor
    stages: torch.Tensor
    grid: torch.Tensor


def default_grid_stage(model: nn.Module) -> int | None:
    """The stage the tumour-map head reads by default: the last one at stride 16 (else the one before
    the last); None for a model without ``forward_intermediates`` (its ``grid`` is the last map)."""
    info = getattr(model, "feature_info", None)
    if not info or not hasattr(model, "forward_intermediates"):
        return None
    at16 = [i for i, f in enumerate(info) if int(f.get("reduction", 0)) == 16]
    return at16[-1] if at16 else max(0, len(info) - 2)


class Heads(nn.Module):
    """A timm classifier as the five :class:`Outputs` from one forward pass.

    ``grid_stage`` is the stage whose feature map comes back as ``grid`` (default:
    :func:`default_grid_stage`); the pass runs every stage once whichever it is.
    """

    def __init__(self, model: nn.Module, grid_stage: int | None = None) -> None:
        super().__init__()
        self.model = model
        # Models without forward_intermediates (rare in timm 1.x) report no early stages.
        self.early = EARLY_STAGES if hasattr(model, "forward_intermediates") else 0
        self.grid_stage = default_grid_stage(model) if grid_stage is None else int(grid_stage)
        if self.early:
            last = len(model.feature_info) - 1
            self.indices = sorted({*range(last - self.early, last + 1), self.grid_stage})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.early:
            maps, taken = self.model.forward_intermediates(x, indices=self.indices)
            by_stage = dict(zip(self.indices, taken, strict=True))
            last = self.indices[-1]
            early = [by_stage[i] for i in range(last - self.early, last)]
            pooled = torch.cat([t.float().mean(dim=(2, 3)) for t in early], dim=1)
            grid = by_stage[self.grid_stage]
        else:
            maps = self.model.forward_features(x)
            pooled = x.new_zeros((x.shape[0], 0))
            grid = maps
        features = self.model.forward_head(maps, pre_logits=True)
        return self.model.get_classifier()(features), features, maps, pooled, grid

    def stage_widths(self) -> list[int]:
        """Channels of each early stage in ``stages``, in order (timm's ``feature_info``, one dict per stage)."""
        return [int(f["num_chs"]) for f in self.model.feature_info][-self.early - 1 : -1] if self.early else []


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively (AVX512-BF16/AMX on CPU, Ampere+ on GPU), i.e. faster, not emulated."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


#: CPU features that decide which variant is fastest (and whether bf16 is native).
_ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni")


def machine_signature() -> dict:
    """What a recorded variant choice depends on: the CPU model, its core count and vector extensions."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "")
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    return {"cpu": name, "cores": os.cpu_count(), "isa": [f for f in _ISA_FLAGS if f in flags]}


def onnx_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def available_variants(device: torch.device, candidates: Sequence[str] = VARIANTS) -> list[str]:
    """The variants of ``candidates`` this machine can run (and, for bf16, runs natively)."""
    out = []
    for v in candidates:
        if v == "bf16" and not native_bf16(device):
            continue
        if v.startswith("onnx") and (device.type != "cpu" or not onnx_available()):
            continue
        out.append(v)
    return out


class Engine:
    """A forward pass: float32 CPU batch (N, C, H, W) in, :class:`Outputs` as float32 CPU tensors out.

    ``grid_stage`` is the stage whose map the pass returns as ``Outputs.grid`` (None: the last map).
    """

    name = "fp32"
    precision = "fp32"
    grid_stage: int | None = None

    def __call__(self, batch: torch.Tensor) -> Outputs:
        raise NotImplementedError


class EagerEngine(Engine):
    """PyTorch eager (optionally channels_last, bf16 autocast or torch.compile)."""

    def __init__(
        self, model: nn.Module, device: torch.device, variant: str = "fp32", grid_stage: int | None = None
    ) -> None:
        self.name = variant
        self.precision = "bf16" if variant == "bf16" else "fp32"
        self.device = device
        self.channels_last = variant in ("channels_last", "bf16")
        # The eager module is shared with Grad-CAM; NHWC weights change its speed, not its maths.
        model.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        heads = Heads(model, grid_stage).eval()
        self.grid_stage = heads.grid_stage
        self.net: Callable = heads
        if variant == "compile":
            self.net = torch.compile(self.net, dynamic=False)

    def __call__(self, batch: torch.Tensor) -> Outputs:
        batch = batch.to(self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.precision == "bf16" else nullcontext()
        with torch.inference_mode(), autocast:
            out = self.net(batch)
        return Outputs(*(t.float().cpu() for t in out))


class OnnxEngine(Engine):
    """ONNX Runtime on an exported model (fp32, or statically quantised int8)."""

    def __init__(
        self, path: str | os.PathLike, name: str = "onnx", threads: int | None = None, grid_stage: int | None = None
    ) -> None:
        import onnxruntime as ort

        self.name = name
        self.path = Path(path)
        self.grid_stage = grid_stage
        self.precision = "int8" if name.endswith("int8") else "fp32"
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        # Idle ORT threads otherwise spin for a while after each run, taking the cores from the decode,
        # transform and gate around the pass (and from the server) on a machine with few cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: torch.Tensor) -> Outputs:
        return Outputs(*(torch.from_numpy(a) for a in self.session.run(None, {"image": batch.float().numpy()})))


def cache_dir() -> Path:
    """Where exported models are kept between starts (``TUMORLIB_CACHE``, default ~/.cache/tumorlib)."""
    if os.environ.get("TUMORLIB_CACHE"):
        return Path(os.environ["TUMORLIB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tumorlib"


def remove_stale_temp(folder: str | os.PathLike, now: float | None = None) -> list[Path]:
    """Remove the temporary files that exports killed halfway left in ``folder``; returns them.

    A file is stale when the process its name records is gone, or when it is older than
    :data:`STALE_TEMP_SECONDS`; a younger one of a running process (an export under way) stays.
    """
    from .uploads import process_start

    now = time.time() if now is None else now
    removed = []
    for path in Path(folder).iterdir():
        export, probe = _EXPORT_TEMP.match(path.name), _PROBE_TEMP.match(path.name)
        if not (export or probe):
            continue
        try:
            old = now - path.lstat().st_mtime > STALE_TEMP_SECONDS
            if not old and (probe or process_start(int(export.group(1))) is not None):
                continue
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    if removed:
        log.info("Removed %d stale temporary file(s) from %s", len(removed), folder)
    return removed


def clean_export_cache(folder: str | os.PathLike | None = None) -> None:
    """Once per process (a server calls it at start): :func:`remove_stale_temp` on the export cache."""
    folder = Path(folder) if folder is not None else cache_dir() / "onnx"
    if folder not in _SWEPT and folder.is_dir():
        _SWEPT.add(folder)
        remove_stale_temp(folder)


def _model_key(model: nn.Module, size: tuple[int, int], grid_stage: int | None = None) -> str:
    """A name for an export that changes when any weight does (weights hashed: no stale exports)."""
    stage = "" if grid_stage is None else f"g{grid_stage}"
    h = hashlib.sha256(f"{type(model).__name__}{size}{torch.__version__}{EXPORT_FORMAT}{stage}".encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


def export_onnx(
    model: nn.Module, path: str | os.PathLike, size: tuple[int, int], grid_stage: int | None = None
) -> Path:
    """Export ``model`` as the five :class:`Outputs` with a dynamic batch axis, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    dummy = torch.zeros(1, 3, *size)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            Heads(model, grid_stage).eval(),
            (dummy,),
            str(tmp),
            dynamo=False,
            input_names=["image"],
            output_names=list(Outputs._fields),
            dynamic_axes={name: {0: "batch"} for name in ("image", *Outputs._fields)},
            opset_version=ONNX_OPSET,
        )
    os.replace(tmp, path)
    return path


def quantize_int8(source: str | os.PathLike, path: str | os.PathLike, calibration: torch.Tensor) -> Path:
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on ``calibration`` (real slices)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"image": calibration[i : i + 1].numpy()} for i in range(len(calibration))])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    logging.disable(logging.WARNING)  # onnxruntime logs advice on the root logger
    try:
        quantize_static(
            str(source),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    finally:
        logging.disable(logging.NOTSET)
    os.replace(tmp, path)
    return path


def onnx_model(
    model: nn.Module,
    size: tuple[int, int],
    int8: bool = False,
    calibration: torch.Tensor | None = None,
    grid_stage: int | None = None,
) -> Path:
    """The cached ONNX export of ``model`` (exported on first use; int8 needs calibration images)."""
    folder = cache_dir() / "onnx"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError:  # a read-only home: export into a temporary folder for this process
        folder = Path(tempfile.mkdtemp(prefix="tumorlib-onnx-"))
    clean_export_cache(folder)
    key = _model_key(model, size, grid_stage)
    fp32 = folder / f"{key}.onnx"
    if not fp32.is_file():
        export_onnx(model, fp32, size, grid_stage)
    if not int8:
        return fp32
    if calibration is None:
        raise ValueError("int8 quantisation needs calibration images")
    calib = hashlib.sha256(calibration.numpy().tobytes()).hexdigest()[:12]
    quant = folder / f"{key}-int8-{calib}.onnx"
    if not quant.is_file():
        quantize_int8(fp32, quant, calibration)
    return quant


def bundle_export_key(weights_sha256: str, size: tuple[int, int], grid_stage: int | None) -> str:
    """The export cache's name for a bundle's export, from the SHA-256 its config records for its weights:
    found without building the model (the export itself is named by the hashed weights, which needs it)."""
    text = f"bundle{weights_sha256}{tuple(size)}{torch.__version__}{EXPORT_FORMAT}g{grid_stage}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def remember_export(key: str, engine: OnnxEngine, served: dict) -> None:
    """Note in the export cache that the bundle ``key`` is served by ``engine``'s file, with what serving
    it needs besides (``served``: the stages' channels and strides, the linear head's tensor names)."""
    from .fileio import save_json

    record = {"onnx": engine.path.name, "variant": engine.name, "grid_stage": engine.grid_stage, **served}
    try:
        save_json(record, engine.path.parent / f"bundle-{key}.json")
    except OSError as err:  # a read-only cache: the next start builds the model again, nothing worse
        log.info("Could not note the export for the next start: %s", err)


def recall_export(key: str, folder: str | os.PathLike | None = None) -> dict | None:
    """What :func:`remember_export` noted for the bundle ``key`` (``path``: the export), or None when
    nothing was, or the export it names is gone."""
    from .fileio import load_json

    folder = Path(folder) if folder is not None else cache_dir() / "onnx"
    try:
        record = load_json(folder / f"bundle-{key}.json")
    except (OSError, ValueError):
        return None
    path = folder / str(record.get("onnx", ""))
    if not record.get("onnx") or not path.is_file():
        return None
    return {**record, "path": path}


def make_engine(
    variant: str,
    model: nn.Module,
    device: torch.device,
    size: tuple[int, int],
    calibration: torch.Tensor | None = None,
    grid_stage: int | None = None,
) -> Engine:
    """Build the engine for ``variant`` (see :data:`VARIANTS`); ``grid_stage``: see :class:`Heads`."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
    if variant.startswith("onnx"):
        if device.type != "cpu":
            raise ValueError("The ONNX variants run on the CPU only.")
        stage = default_grid_stage(model) if grid_stage is None else grid_stage
        path = onnx_model(model, size, int8=variant == "onnx-int8", calibration=calibration, grid_stage=stage)
        return OnnxEngine(path, variant, threads=torch.get_num_threads(), grid_stage=stage)
    if variant == "bf16" and not native_bf16(device):
        warnings.warn("bf16 is emulated on this machine: expect it to be slower than fp32", stacklevel=2)
    return EagerEngine(model, device, variant, grid_stage)


def agrees(reference: torch.Tensor, candidate: torch.Tensor, tolerance: float = TOLERANCE) -> tuple[bool, float]:
    """(same top class everywhere and every probability within ``tolerance``, largest difference)."""
    diff = float((reference - candidate).abs().max()) if reference.numel() else 0.0
    same = bool((reference.argmax(1) == candidate.argmax(1)).all())
    return same and diff <= tolerance, diff


def time_calls(fn: Callable[[], object], n: int = 5, warmup: int = 2) -> list[float]:
    """Seconds per call of ``fn`` over ``n`` timed calls after ``warmup`` untimed ones (kernels picked)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_ms(times: Sequence[float]) -> float:
    return float(np.median(times) * 1000) if len(times) else float("nan")


def limit_heap_growth() -> None:
    """Keep a long-running server's memory flat (glibc only; elsewhere a no-op).

    Gradio answers from a pool of threads, and glibc gives each thread its own heap and raises its
    mmap threshold after large frees, so image-sized buffers (decoded uploads, feature maps, ONNX
    Runtime outputs) end up parked in many heaps. A fixed 1 MB threshold returns them to the OS at
    once; two heaps are plenty when one model run holds the lock at a time.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, 2)  # M_ARENA_MAX
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def trim_heap() -> None:
    """Hand freed heap memory back to the OS now (glibc only; elsewhere a no-op): after a released
    model, loading leaves its transient copies (the read state dict, the hashed bytes) in the heap."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
