"""The real app under load: 8 concurrent API clients x 25 requests, good and bad files mixed; its file route.

The server is what ``python app.py`` starts (shipped model, preloaded, gate and Grad-CAM on) in this
process, so its memory is this process's. Latency, throughput and memory go to stdout (``-s``) and to
``load.json`` in the test's temporary folder.
"""

from __future__ import annotations

import ctypes
import gc
import http.client
import json
import os
import statistics
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import psutil
import pytest

import app
from tumorlib import DEFAULT_MODEL_DIR, decode_image
from tumorlib.errors import ImageError

from .conftest import FIGSHARE, FOLDERS, ROOT, free_port

CLIENTS, PER_CLIENT = 8, 25
#: Slices of every class the shipped model reads with confidence (its top class is never a near tie).
GOOD = [FIGSHARE / "images" / f"{n}.jpg" for n in (2384, 2100, 450, 343, 1089, 990)] + [
    FOLDERS / "no_tumor" / "br35h_3271.jpg",
    FOLDERS / "no_tumor" / "sartaj_image118.jpg",
]
MAX_GROWTH_MB = 50


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python app.py``'s start-up (model loaded, forward pass chosen, warmed up), on a free local port;
    Gradio's uploads go to a temporary folder of the test."""
    cache = tmp_path_factory.mktemp("gradio")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(cache))
        demo = app.build_demo(model_dirs=[DEFAULT_MODEL_DIR], preload=True)
        port = free_port()
        app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        yield demo, port, cache
        demo.close()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[Path, str]:
    """Bad uploads and the message tumorlib gives for each."""
    root = tmp_path_factory.mktemp("bad")
    files = {root / "empty.jpg": b"", root / "notes.jpg": b"my notes, not an image\n" * 20}
    files[root / "cut.jpg"] = GOOD[0].read_bytes()[: GOOD[0].stat().st_size // 2]
    messages = {}
    for path, data in files.items():
        path.write_bytes(data)
        with pytest.raises(ImageError) as excinfo:
            decode_image(path)
        messages[path] = str(excinfo.value)
    return messages


def _settled_rss(process: psutil.Process) -> tuple[int, int]:
    """(RSS, RSS after a garbage collection and glibc's malloc_trim): the second is what the process holds;
    the first also counts free heap the allocator keeps per thread, which swings by tens of MB run to run."""
    raw = process.memory_info().rss
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the collection alone
        pass
    return raw, process.memory_info().rss


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


@pytest.mark.timeout(600)
def test_concurrent_clients_get_their_answers_and_memory_stays_flat(server, bad_files, tmp_path):
    """200 requests from 8 clients: every good file its label, every bad one its message; RSS flat."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    demo, port, cache = server
    url = f"http://127.0.0.1:{port}/"
    # The server's own classifier, with the forward pass it chose at start: any variant within
    # runtime.TOLERANCE (0.01) of fp32 may win the timing, so fp32's answers are not the reference.
    _, served_clf = demo.service.registry.get()
    expected = {path: served_clf.predict(path) for path in GOOD}
    bad = list(bad_files)
    # One request in four is bad; each client starts at another file.
    plan = [
        [bad[(i + j) % len(bad)] if j % 4 == 3 else GOOD[(i + j) % len(GOOD)] for j in range(PER_CLIENT)]
        for i in range(CLIENTS)
    ]
    process = psutil.Process()
    results: list[tuple[Path, object, str | None, float]] = []
    rss: dict[int, tuple[int, int]] = {}
    lock = threading.Lock()
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
            for path in plan[i]:
                start = time.perf_counter()
                try:
                    out, error = client.predict(handle_file(str(path)), api_name="/predict"), None
                except AppError as err:
                    out, error = None, str(err)
                seconds = time.perf_counter() - start
                with lock:
                    results.append((path, out, error, seconds))
                    if len(results) in (50, CLIENTS * PER_CLIENT):
                        rss[len(results)] = _settled_rss(process)
            client.close()
        except BaseException as err:  # noqa: BLE001 - reported below, with the thread that failed
            failures.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    assert not failures, failures
    assert len(results) == CLIENTS * PER_CLIENT

    for path, out, error, _ in results:
        if path in expected:
            assert error is None, (path.name, error)
            label, overlay, summary = out
            probs = expected[path]
            top = max(probs, key=probs.get)
            assert label["label"] == top, (path.name, label, probs)
            served = {c["label"]: c["confidence"] for c in label["confidences"]}
            assert max(abs(served[k] - probs[k]) for k in probs) < 1e-3, path.name
            assert overlay and "Brain-MRI check passed" in summary
        else:
            assert out is None and error is not None, path.name
            assert f"Cannot read this file: {bad_files[path]}" in error, (path.name, error)

    latency = [s for _, _, _, s in results]
    good = [s for p, _, _, s in results if p in expected]
    refused = [s for p, _, _, s in results if p not in expected]
    figures = {
        "requests": len(results),
        "clients": CLIENTS,
        "good": len(good),
        "bad": len(refused),
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(results) / wall, 2),
        "p50_ms": round(1000 * statistics.median(latency), 1),
        "p95_ms": round(1000 * _percentile(latency, 95), 1),
        "good_p50_ms": round(1000 * statistics.median(good), 1),
        "good_p95_ms": round(1000 * _percentile(good, 95), 1),
        "bad_p50_ms": round(1000 * statistics.median(refused), 1),
        "bad_p95_ms": round(1000 * _percentile(refused, 95), 1),
        "rss_mb_after_50": round(rss[50][1] / 2**20, 1),
        "rss_mb_after_200": round(rss[CLIENTS * PER_CLIENT][1] / 2**20, 1),
        "raw_rss_mb_after_50": round(rss[50][0] / 2**20, 1),
        "raw_rss_mb_after_200": round(rss[CLIENTS * PER_CLIENT][0] / 2**20, 1),
        "cpu_count": os.cpu_count(),
        # app.upload_box: Gradio 6.31's gr.File left one empty temp file per upload here.
        "stray_cache_files": sum(1 for p in cache.iterdir() if p.is_file()),
    }
    (tmp_path / "load.json").write_text(json.dumps(figures, indent=2))
    print(f"\nload test ({tmp_path / 'load.json'}): {json.dumps(figures)}")
    growth_mb = (rss[CLIENTS * PER_CLIENT][1] - rss[50][1]) / 2**20
    assert growth_mb <= MAX_GROWTH_MB, figures
    assert figures["stray_cache_files"] == 0, figures


# --------------------------------------------------------------------------- the file route


def _get(port: int, raw_path: str) -> tuple[int, bytes]:
    """GET ``raw_path`` exactly as written: no client-side normalisation of ``..`` or escapes."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("GET", raw_path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


EXAMPLE = app.EXAMPLES_DIR / "glioma_figshare_2384.jpg"
OUTSIDE = [
    "/etc/passwd",
    "../../../../../../etc/passwd",
    "..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "/proc/self/environ",
    "~/.bashrc",
    "file:///etc/passwd",
    f"{ROOT}/app.py",
    "app.py",
    f"{ROOT}/models/default/config.json",
    f"{ROOT}/.git/config",
    f"{app.EXAMPLES_DIR}/../app.py",
    f"{app.EXAMPLES_DIR}/%2e%2e/app.py",
    f"{app.EXAMPLES_DIR}/..%2f..%2fapp.py",
    f"{app.EXAMPLES_DIR}/../../../../etc/passwd",
    "http://127.0.0.1:{port}/config",  # the server fetching from itself (server-side request forgery)
    "http://169.254.169.254/latest/meta-data/",
]


@pytest.mark.parametrize("target", OUTSIDE)
def test_file_route_refuses_everything_outside_the_examples(server, target):
    """``/gradio_api/file=`` serves the examples folder and nothing else: no path escapes it."""
    _, port, _ = server
    status, body = _get(port, f"/gradio_api/file={target.format(port=port)}")
    assert status in (400, 403, 404), (status, body[:200])
    assert b"root:x:0:0" not in body and b"def build_demo" not in body and b'"architecture"' not in body
    assert b"[core]" not in body and b"PATH=" not in body


def test_file_route_serves_the_examples(server):
    """The control: an example slice, as allowed_paths names, is served byte for byte."""
    _, port, _ = server
    status, body = _get(port, f"/gradio_api/file={EXAMPLE}")
    assert status == 200 and body == EXAMPLE.read_bytes()


def test_upload_names_cannot_leave_the_cache(server, tmp_path):
    """An upload named ``../../x.jpg`` is stored inside Gradio's cache folder under its bare name."""
    import httpx

    _, port, cache = server
    name = f"{tmp_path.name}-evil.jpg"
    response = httpx.post(
        f"http://127.0.0.1:{port}/gradio_api/upload", files={"files": (f"../../../../../{name}", b"data")}, timeout=30
    )
    assert response.status_code == 200, response.text
    (stored,) = response.json()
    assert Path(stored).resolve().is_relative_to(cache.resolve()) and Path(stored).name == name
    assert not (cache.parent / name).exists() and not (Path("/") / name).exists()
