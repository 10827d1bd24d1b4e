"""The public Gradio app: upload a brain MRI slice, get its class, see why, read how good the model is.

A thin shell over :mod:`tumorlib`: the uploaded file itself goes to :func:`tumorlib.pipeline.analyse`
(decode, one forward pass, the not-an-MRI check, calibrated probabilities, the model's heatmap), the
words come from :mod:`tumorlib.summary`, batches from :mod:`tumorlib.batch`, the models on offer from
:mod:`tumorlib.registry`, and the Model tab from :func:`tumorlib.results.model_info`. This file holds
the page, its handlers and what the app keeps (session state, result CSVs).

API (see the README): ``/predict`` takes one image file and returns the ``gr.Label`` value, the heatmap
overlay (the tumour map, or Grad-CAM of the top class) and a Markdown summary; ``/batch`` takes files
(images, zips) and a model name and returns a table and a CSV. Any unreadable or refused input raises
``gr.Error`` with a message saying why.

Research demo: not a medical device, not for diagnosis. Uploads, heatmaps and result CSVs stay only in
this process's folder of Gradio's temp folder (:mod:`tumorlib.uploads`) and are deleted on a timer, and
after a crash when the app next starts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from gradio.utils import NamedString
from PIL import Image

from tumorlib import pipeline, results, summary, uploads
from tumorlib.about import about
from tumorlib.batch import (
    BatchLimits,
    ResultStore,
    iter_batch,
    plan_batch,
    require_upload,
    upload_path,
    write_csv,
)
from tumorlib.bundle import resolve_bundle_dir
from tumorlib.decode import SUPPORTED_FORMATS
from tumorlib.errors import ImageError, NoModelError, NotBrainMRIError, TumorlibError
from tumorlib.errors import user_message as library_message
from tumorlib.groups import BatchResult, classify_items
from tumorlib.pipeline import TUMOUR_MAP, Analysis, to_display
from tumorlib.registry import MODEL_ENV, NO_MODEL_MESSAGE, ModelRegistry, discover_models, specs_from
from tumorlib.runtime import clean_export_cache, limit_heap_growth

log = logging.getLogger("tumorlib.app")

__all__ = ["MODEL_ENV", "TUMOUR_MAP", "DemoService", "build_demo", "discover_models", "launch", "specs_from"]

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"
#: A batch: at most this many images, this much uncompressed data.
BATCH_LIMITS = BatchLimits(max_files=100, max_total_bytes=256 * 2**20)
#: Gradio's own upload limit, above the decoder's per-file limit so the decoder's clearer message wins.
MAX_UPLOAD = "200mb"
#: How long uploads, overlays and result CSVs are kept (seconds); the notice promises twice this.
CACHE_SECONDS = 900
#: Requests served at once per model; more wait in a queue of QUEUE_SIZE.
CONCURRENCY = 2
QUEUE_SIZE = 32
MODEL_QUEUE = {"concurrency_id": "model", "concurrency_limit": CONCURRENCY}
DEFAULT_OPACITY = 0.5
TUMOUR_MAP_CHOICE = ("Tumour map (localiser)", TUMOUR_MAP)

TITLE = "Brain tumour MRI classifier"
NOTICE = (
    "**Research demo: not a medical device, not for diagnosis.** It classifies a single 2-D MRI slice into "
    "one of a few tumour types it was trained on and can be confidently wrong. Never use it to make or "
    "rule out a diagnosis; talk to a doctor. **Uploads are not stored:** each upload, its heatmap and any "
    "batch CSV sit only in this server's temporary folder while they are used, are never logged or used "
    f"for training, and are deleted within {2 * CACHE_SECONDS // 60} minutes; if the server crashes, they "
    "stay on its disk until the app starts again, which deletes them first (details in About)."
)
ONLY_UPLOADS = (
    "Only uploaded files are accepted: send the file itself (gradio_client's handle_file uploads it), "
    "not the path or name of a file on the server."
)
UNEXPECTED_MESSAGE = (
    "Something went wrong while processing this file. The error has been logged on the server; "
    "please try another image."
)
CSS = """
.notice {border-left: 6px solid #D55E00; background: rgba(213, 94, 0, 0.08); padding: 10px 14px;
         border-radius: 6px;}
.no-model {border-left: 6px solid #CC0000; background: rgba(204, 0, 0, 0.08); padding: 10px 14px;
           border-radius: 6px;}
.refusal {border-left: 6px solid #CC0000; padding: 4px 12px;}
"""


def user_message(err: BaseException) -> str:
    """The library's message for a visitor, pointing a zip upload to the Batch tab."""
    text = library_message(err)
    if isinstance(err, ImageError) and not isinstance(err, NotBrainMRIError) and "zip archive" in str(err):
        text += " To classify several images, use the Batch tab."
    return text


def _gr_error(err: BaseException) -> gr.Error:
    return gr.Error(user_message(err), print_exception=False)


def _radio(choices: list, value: Any = None, info: str | None = None) -> gr.Radio:
    return gr.Radio(choices=choices, value=value, info=info)


# --------------------------------------------------------------------------- the service behind the page


@dataclass
class DemoService:
    """Everything the page does, as plain methods the tests call directly.

    ``check=False`` turns the not-an-MRI check off (any image gets a class, and the summary says so);
    ``optimise`` picks each model's fastest forward pass that gives fp32's answers when it loads.
    """

    models: Sequence
    check: bool = True
    batch_limits: BatchLimits = BATCH_LIMITS
    device: str | None = None
    optimise: bool = False
    registry: ModelRegistry = field(init=False)
    _info: dict[str, results.ModelInfo] = field(init=False, default_factory=dict)
    _csvs: ResultStore = field(init=False, default_factory=lambda: ResultStore(CACHE_SECONDS))

    def __post_init__(self) -> None:
        self.registry = ModelRegistry(self.models, self.device, optimise=self.optimise)

    def preload(self) -> None:
        """Load the default model and run the whole answer once (kernels picked, caches warm)."""
        self.registry.preload(next(iter(sorted(EXAMPLES_DIR.glob("*.jpg"))), None))

    def preload_in_background(self) -> threading.Thread:
        """:meth:`preload` in a daemon thread, so the page can come up meanwhile: a visitor who asks before
        it is done waits for that one load (the registry loads each model once), never for a second."""
        thread = threading.Thread(target=self.preload, name="warm-up", daemon=True)
        thread.start()
        return thread

    # ----------------------------------------------------------------- one image

    def analyse(self, file: Any, model: str | None = None) -> Analysis:
        """The full answer for an upload. Raises TumorlibError subclasses with user messages."""
        path = require_upload(file)
        name, clf = self.registry.get(model)
        return pipeline.analyse(clf, path, check=self.check, name=name)

    def metrics_of(self, name: str) -> dict | None:
        """The model's ``metrics.json`` (read once), or None when it has none or it cannot be read."""
        return self.model_info(name).metrics

    def summary(self, analysis: Analysis, heatmap: pipeline.Heatmap | None = None) -> str:
        return summary.summary(analysis, heatmap, self.metrics_of(analysis.model))

    def predict(self, file: Any) -> tuple[dict[str, float], Image.Image | None, str]:
        """The API: (probabilities by class, heatmap overlay or None, Markdown summary).

        Raises gr.Error with the reason for anything unreadable, refused or broken.
        """
        try:
            analysis = self.analyse(file)
            heatmap = analysis.heatmap
            overlay = heatmap.explanation.overlay(DEFAULT_OPACITY) if heatmap.explanation is not None else None
            return dict(analysis.probabilities), to_display(overlay), self.summary(analysis, heatmap)
        except TumorlibError as err:
            raise _gr_error(err) from None
        except Exception:  # a visitor gets a message, the log gets the traceback
            log.exception("Unexpected error in /predict")
            raise gr.Error(UNEXPECTED_MESSAGE) from None

    def predict_ui(self, file: Any, model: str | None, opacity: float = DEFAULT_OPACITY) -> tuple:
        """The page's classify step: like :meth:`predict`, but errors are shown in place of the result.

        Returns (label, summary, input view, overlay view, class selector, state).
        """
        if file is None:
            return None, "", None, None, _radio([]), None
        try:
            analysis = self.analyse(file, model)
        except NotBrainMRIError as err:
            return self._refusal(err, to_display(err.image))
        except TumorlibError as err:
            return self._refusal(err)
        except Exception as err:  # a visitor gets a message, the log gets the traceback
            log.exception("Unexpected error in the classify step")
            return self._refusal(err)
        heatmap = analysis.heatmap
        overlay = None
        explanations: dict[str, Any] = {}
        if heatmap.explanation is not None:
            overlay = to_display(heatmap.explanation.overlay(float(opacity)))
            explanations[TUMOUR_MAP if heatmap.kind == "map" else analysis.top] = heatmap.explanation
        # Redraws need the working copy only: the session keeps no full-size decoded image.
        state = {
            "model": analysis.model,
            "analysis": replace(analysis, image=analysis.working),
            "explanations": explanations,
        }
        choices = [(summary.pretty(label), label) for label in analysis.labels]
        if TUMOUR_MAP in explanations:  # a map that failed is not offered: the note says why
            info = (
                "The tumour map shows where a tumour is likely; a class shows its Grad-CAM, where the network looked."
            )
            selector = _radio([TUMOUR_MAP_CHOICE, *choices], TUMOUR_MAP, info)
        else:
            selector = _radio(choices, analysis.top, "Grad-CAM of a class: where the network looked.")
        probabilities = dict(analysis.probabilities)
        return probabilities, self.summary(analysis, heatmap), to_display(analysis.image), overlay, selector, state

    def _refusal(self, err: BaseException, view: Image.Image | None = None) -> tuple:
        text = user_message(err) if isinstance(err, TumorlibError) else UNEXPECTED_MESSAGE
        title = "Not a brain MRI" if isinstance(err, NotBrainMRIError) else "No result"
        card = f"### ⚠️ {title}\n\n{text}"
        if isinstance(err, NotBrainMRIError):
            card += "\n\nNo diagnosis is given for images that do not look like a brain MRI slice."
        return None, card, view, None, _radio([]), None

    def explain_ui(self, state: dict | None, target: str | None, opacity: float) -> tuple:
        """Redraw the overlay for another heatmap or opacity: ``target`` is a class (its Grad-CAM) or
        :data:`TUMOUR_MAP`; each is computed once per session state."""
        if not state or not target:
            return None, state
        explanations = state.setdefault("explanations", {})
        explanation = explanations.get(target)
        if explanation is None:
            try:
                _, clf = self.registry.get(state["model"])
            except TumorlibError as err:
                raise _gr_error(err) from None
            analysis = state["analysis"]
            if target == TUMOUR_MAP:
                heatmap = pipeline.tumour_map(clf, analysis.working)
                if heatmap.explanation is None:  # the prediction stands; the overlay is left empty
                    gr.Warning(heatmap.note)
                    return None, state
            else:
                heatmap = pipeline.gradcam(clf, analysis.working, target, analysis.maps)
                if heatmap.explanation is None:
                    raise gr.Error(heatmap.note, print_exception=False)
            explanation = explanations[target] = heatmap.explanation
        return to_display(explanation.overlay(float(opacity))), state

    # ----------------------------------------------------------------- batch

    def classify_batch(
        self,
        files: Sequence[Any] | None,
        model: str | None = None,
        progress: Callable | None = None,
        heatmaps: bool = True,
    ) -> BatchResult:
        """Every slice of the uploads (archives and multi-frame DICOM files expanded), and one answer per
        DICOM series or zip folder (see :mod:`tumorlib.groups`).

        An archive refused as a whole (zip bomb, path traversal, too many files) or a batch over the limits
        raises gr.Error before any work; one unreadable or refused image only fills its own row.
        """
        try:
            paths = [p for p in (upload_path(f) for f in files or []) if p is not None]
            if not paths:
                raise ImageError("No files were uploaded. Upload images, or a zip of images, first.")
            total = plan_batch(paths, self.batch_limits)
            _, clf = self.registry.get(model)

            def report(done: int, of: int) -> None:
                if progress is not None:
                    progress((done, of), desc="Classifying")

            return classify_items(
                clf,
                iter_batch(paths, self.batch_limits),
                self.check,
                max_slices=self.batch_limits.max_files,
                planned=total,
                progress=report,
                heatmaps=heatmaps,
            )
        except TumorlibError as err:  # refused before any work, or an archive that changed after its check
            raise _gr_error(err) from None

    def run_batch(
        self, files: Sequence[Any] | None, model: str | None = None, progress: Callable | None = None
    ) -> pd.DataFrame:
        """One row per slice (archives and multi-frame files expanded): prediction and probabilities, the
        group it was pooled with, or why there is none. Raises gr.Error as :meth:`classify_batch` does."""
        return self.classify_batch(files, model, progress, heatmaps=False).slices_frame()

    def write_csv(self, frame: pd.DataFrame) -> Path:
        """The table as a CSV in a private temp folder, deleted after CACHE_SECONDS (and at exit)."""
        return write_csv(frame, self._csvs.new_path("tumour_predictions.csv"))

    def batch_ui(self, files: Sequence[Any] | None, model: str | None, progress=gr.Progress()) -> tuple:  # noqa: B008
        """The Batch tab, and the /batch endpoint: (per-slice table, its CSV path, summary, per-group table,
        each group's (best slice with its heatmap, caption)). Without groups the last two are empty."""

        def report_progress(done_total: tuple[int, int], desc: str) -> None:
            progress(done_total, desc=desc)

        result = self.classify_batch(files, model, progress=report_progress)
        frame = result.slices_frame()
        path = self.write_csv(frame)
        groups, gallery = _rounded(result.groups_frame()), result.gallery(DEFAULT_OPACITY)
        return _rounded(frame), str(path), result.summary(), groups, gallery

    @staticmethod
    def show_groups(groups: pd.DataFrame | None) -> tuple:
        """Show the per-group table and gallery only when the batch had groups (the page's step after /batch)."""
        shown = groups is not None and len(groups) > 0
        return gr.Dataframe(visible=shown), gr.Gallery(visible=shown)

    # ----------------------------------------------------------------- model tab

    def model_info(self, name: str | None) -> results.ModelInfo:
        """The Model tab's content for ``name`` (read once): facts, metrics tables and figures, the card."""
        try:
            name = self.registry.resolve(name)
        except NoModelError as err:
            return results.ModelInfo(facts=f"**{user_message(err)}**")
        if name not in self._info:
            loaded, source = self.registry.loaded(name), self.registry.specs[name].source
            try:
                folder = loaded.bundle.path if loaded is not None else resolve_bundle_dir(source)
            except TumorlibError as err:
                return results.ModelInfo(facts=f"**Model `{name}`: {user_message(err)}**")
            self._info[name] = results.model_info(folder, name, source)
        return self._info[name]

    def model_tab(self, name: str | None) -> tuple:
        """(facts, headline, per-class, paper table, confusion matrix, reliability, card, note) for the tab."""
        info = self.model_info(name)
        has = info.headline is not None
        empty = pd.DataFrame()
        return (
            info.facts,
            gr.Dataframe(value=info.headline if has else empty, visible=has),
            gr.Dataframe(value=info.per_class if has else empty, visible=has),
            gr.Dataframe(value=info.paper if has else empty, visible=has),
            gr.Plot(value=info.confusion, visible=info.confusion is not None),
            gr.Plot(value=info.reliability, visible=info.reliability is not None),
            info.card or "No model card (README.md) came with this model.",
            info.metrics_note or results.PAPER_CAVEAT,
        )


def _rounded(frame: pd.DataFrame) -> pd.DataFrame:
    """A results table as shown: probabilities to 4 decimals."""
    shown = frame.copy()
    columns = [c for c in shown.columns if c in ("confidence", "probability") or c.startswith("p_")]
    shown[columns] = shown[columns].round(4)
    return shown


# --------------------------------------------------------------------------- the page


def _examples() -> list[tuple[str, str]]:
    """(path, caption) of the committed example slices (named ``<class>_<source>.jpg``), class by class."""
    order = list(summary.CLASS_DESCRIPTIONS)
    items = []
    for path in EXAMPLES_DIR.glob("*.jpg"):
        label = next((c for c in order if path.name.startswith(c + "_")), "")
        rank = order.index(label) if label else len(order)
        items.append((rank, path.name, str(path), label.replace("_", " ") or path.stem))
    return [(path, caption) for _, _, path, caption in sorted(items)]


ABOUT = about(2 * CACHE_SECONDS // 60)


def upload_box(**kwargs: Any) -> gr.File:
    """``gr.File(type="filepath", ...)`` that hands the handler the uploaded file's cached path and nothing more.

    Gradio 6.31's ``File`` preprocessing opens a ``NamedTemporaryFile`` in the cache for every file
    only to overwrite the object's name, so each upload left an empty file behind (and an open
    descriptor until garbage collection): on a public server, files without end. The fix is on the
    instance: a ``gr.File`` subclass would make Gradio write an ``app.pyi`` stub beside this file.
    """
    box = gr.File(type="filepath", **kwargs)
    gradio_own = box._process_single_file

    def cached_path(f: Any) -> Any:
        return gradio_own(f) if box.file_types else NamedString(f.path)  # with file_types: Gradio's check

    box._process_single_file = cached_path
    return box


def only_uploads(demo: gr.Blocks) -> None:
    """Say why a request that names a path instead of uploading a file is refused.

    Gradio refuses such a path (or a string where a file goes) itself, before any handler runs, and
    without ``show_error`` its client is told nothing (``{"error": null}``).
    """
    gradio_own = demo.preprocess_data

    async def preprocess_data(block_fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await gradio_own(block_fn, *args, **kwargs)
        except ValueError:  # InvalidPathError, or pydantic's ValidationError for a string where a file goes
            if not any(isinstance(block, gr.File) for block in block_fn.inputs):
                raise
            raise gr.Error(ONLY_UPLOADS, print_exception=False) from None

    demo.preprocess_data = preprocess_data


def build_demo(
    model_dirs: Sequence[str | os.PathLike] | None = None,
    *,
    check: bool = True,
    preload: bool = False,
    background: bool = False,
    service: DemoService | None = None,
) -> gr.Blocks:
    """The whole page. ``model_dirs``: folders or Hub ids to offer (default: :func:`discover_models`).

    Nothing is loaded unless ``preload``; with ``background`` as well (what ``python app.py`` does) the
    loading and warm-up run while the page is built and served. The returned Blocks has its queue
    configured; start it with :func:`launch`.
    """
    limit_heap_growth()
    clean_export_cache()  # what an export killed halfway left in the cache
    # Gradio reads GRADIO_TEMP_DIR as each component and the server are made: pointed at this process's own
    # area, uploads and outputs land where a sweep finds them, and where the next start looks after a crash.
    area = uploads.claim(CACHE_SECONDS)
    os.environ["GRADIO_TEMP_DIR"] = str(area.path)
    if service is None:
        specs = specs_from(model_dirs) if model_dirs is not None else discover_models()
        service = DemoService(specs, check=check, optimise=preload)
    warm_up = service.preload_in_background() if preload and background else None
    if preload and not background:
        service.preload()
    names = service.registry.names
    default = service.registry.default
    analytics = os.environ.get("GRADIO_ANALYTICS_ENABLED", "False").strip().lower() in ("1", "true", "yes")

    with gr.Blocks(
        title=f"{TITLE} (research demo)", analytics_enabled=analytics, delete_cache=(CACHE_SECONDS, CACHE_SECONDS)
    ) as demo:
        demo.service = service  # for tests and scripts
        demo.warm_up = warm_up  # the background warm-up's thread (None: none runs)
        gr.Markdown(f"# {TITLE}\nUpload one 2-D brain MRI slice to see which tumour type a neural network reads.")
        gr.Markdown(NOTICE, elem_classes="notice", elem_id="notice")
        if not names:
            gr.Markdown(f"### No model is installed\n\n{NO_MODEL_MESSAGE}", elem_classes="no-model", elem_id="no-model")
        model_dd = gr.Dropdown(
            choices=names,
            value=default,
            label="Model",
            info="The bundled models; the first is the default.",
            interactive=len(names) > 1,
            visible=bool(names),
        )
        # The session's decoded image and heatmaps (for redraws): dropped with the upload, not kept for the
        # life of the tab (Gradio keeps up to 10000 sessions).
        state = gr.State(None, time_to_live=2 * CACHE_SECONDS)

        with gr.Tabs():
            with gr.Tab("Classify", id="classify"):
                with gr.Row():
                    with gr.Column(scale=4):
                        file_in = upload_box(
                            label=f"MRI slice ({SUPPORTED_FORMATS.replace('GIF (one frame) or ', '')})",
                            file_count="single",
                            elem_id="upload",
                        )
                        with gr.Accordion("…or paste a copied image (Ctrl+V / ⌘V)", open=False):
                            # Only for pasting: the pasted PNG's path is handed to the upload box above, so
                            # it is decoded by tumorlib like any upload.
                            paste_in = gr.Image(
                                sources=["clipboard"],
                                type="filepath",
                                image_mode=None,
                                format="png",
                                show_label=False,
                                height=160,
                            )
                        classify_btn = gr.Button("Classify", variant="primary", elem_id="classify")
                        gallery = gr.Gallery(
                            value=_examples(),
                            label="Examples: click one (real slices of each class, see examples/README.md)",
                            columns=4,
                            height="auto",
                            allow_preview=False,
                            object_fit="cover",
                            interactive=False,
                            elem_id="examples",
                        )
                    with gr.Column(scale=5):
                        label_out = gr.Label(label="Prediction (calibrated probabilities)", elem_id="prediction")
                        summary_out = gr.Markdown(label="Summary", elem_id="summary")
                        with gr.Row(equal_height=True):
                            input_view = gr.Image(label="Your image, as decoded", interactive=False, type="pil")
                            # The tumour map or a class's Grad-CAM: the selector and the summary say which.
                            # JPEG: encoded in ~3 ms at 49 dB PSNR, where Gradio's default WebP takes ~80 ms.
                            overlay_view = gr.Image(
                                label="Heatmap over your image",
                                interactive=False,
                                type="pil",
                                format="jpeg",
                            )
                        with gr.Row():
                            target = gr.Radio(label="Heatmap", choices=[], value=None)
                            opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Heatmap opacity")
                api_btn = gr.Button(visible=False)

            with gr.Tab("Batch", id="batch"):
                gr.Markdown(
                    f"Classify several images at once: select multiple files, or a zip of images (at most "
                    f"{service.batch_limits.max_files} images, "
                    f"{service.batch_limits.max_total_bytes // 2**20} MB uncompressed). A file that cannot be "
                    "read gets a note in its row; the rest are still classified.\n\n"
                    "Slices that belong together get one answer as well: the DICOM files of one series, the "
                    "frames of a multi-frame DICOM, the files of one folder in a zip (loose image files are "
                    "answered one by one). The answer is the mean of the slices' calibrated probabilities over "
                    "those the brain-MRI check accepts, shown with how many slices agree, the refused slices, and "
                    "the slice that most supports it with its heatmap. (The Classify tab reads the middle frame "
                    "of a multi-frame DICOM.)"
                )
                batch_in = upload_box(label="Images or zip archives", file_count="multiple")
                batch_btn = gr.Button("Classify all", variant="primary")
                batch_summary = gr.Markdown(label="Batch summary")
                group_table = gr.Dataframe(
                    label="One answer per series or folder", interactive=False, wrap=True, visible=False
                )
                group_gallery = gr.Gallery(
                    label="Each group's best slice, with its heatmap",
                    columns=4,
                    height="auto",
                    allow_preview=True,
                    interactive=False,
                    visible=False,
                )
                batch_table = gr.Dataframe(label="Results per slice", interactive=False, wrap=True)
                batch_csv = gr.File(label="Results per slice as CSV", interactive=False)

            with gr.Tab("Model", id="model"):
                facts = gr.Markdown()
                metrics_note = gr.Markdown()
                headline = gr.Dataframe(label="Headline metrics (patient-level test split)", interactive=False)
                with gr.Row():
                    confusion = gr.Plot(label="Confusion matrix")
                    reliability = gr.Plot(label="Calibration")
                per_class = gr.Dataframe(label="Per class (one vs rest)", interactive=False)
                paper = gr.Dataframe(label="Compared with the reference paper", interactive=False)
                with gr.Accordion("Full model card", open=False):
                    card = gr.Markdown()

            with gr.Tab("About", id="about"):
                gr.Markdown(ABOUT)

        model_outputs = [facts, headline, per_class, paper, confusion, reliability, card, metrics_note]
        ui_outputs = [label_out, summary_out, input_view, overlay_view, target, state]

        # The page: errors appear in place of the result. API clients use /predict below instead.
        gr.on(
            [file_in.change, classify_btn.click],
            service.predict_ui,
            inputs=[file_in, model_dd, opacity],
            outputs=ui_outputs,
            api_visibility="private",
            **MODEL_QUEUE,
            trigger_mode="always_last",
        )
        model_dd.change(
            service.model_tab, inputs=model_dd, outputs=model_outputs, api_visibility="private", queue=False
        ).then(
            service.predict_ui,
            inputs=[file_in, model_dd, opacity],
            outputs=ui_outputs,
            api_visibility="private",
            **MODEL_QUEUE,
        )
        for event in (target.input, opacity.release):  # another heatmap or opacity redraws the overlay
            event(
                service.explain_ui,
                inputs=[state, target, opacity],
                outputs=[overlay_view, state],
                api_visibility="private",
                **MODEL_QUEUE,
                trigger_mode="always_last",
            )
        examples = [path for path, _ in _examples()]

        def pick_example(evt: gr.SelectData) -> str | None:
            index = evt.index if isinstance(evt.index, int) else -1
            return examples[index] if 0 <= index < len(examples) else None

        paste_in.change(lambda path: path, inputs=paste_in, outputs=file_in, api_visibility="private", queue=False)
        gallery.select(
            pick_example,
            inputs=None,
            outputs=file_in,
            api_visibility="private",
            queue=False,
        )
        api_btn.click(
            service.predict,
            inputs=file_in,
            outputs=[label_out, overlay_view, summary_out],
            api_name="predict",
            api_description="Classify one brain MRI slice: (gr.Label value, heatmap overlay or None, Markdown).",
            **MODEL_QUEUE,
        )
        batch_btn.click(
            service.batch_ui,
            inputs=[batch_in, model_dd],
            outputs=[batch_table, batch_csv, batch_summary, group_table, group_gallery],
            api_name="batch",
            api_description=(
                "Classify several images or zips of images: (per-slice table, its CSV file, Markdown summary, "
                "one answer per DICOM series or zip folder, each group's best slice with its heatmap)."
            ),
            concurrency_id="batch",
            concurrency_limit=1,
        ).then(
            service.show_groups,
            inputs=group_table,
            outputs=[group_table, group_gallery],
            api_visibility="private",
            queue=False,
        )
        demo.load(service.model_tab, inputs=model_dd, outputs=model_outputs, api_visibility="private", queue=False)
    area.keep(lambda: {f for block in demo.blocks.values() for f in getattr(block, "keep_in_cache", ())})  # gallery
    only_uploads(demo)
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def launch(demo: gr.Blocks, **kwargs: Any) -> Any:
    """Start the server with the app's settings; ``kwargs`` override them (host/port default to the
    GRADIO_SERVER_NAME / GRADIO_SERVER_PORT variables, as Gradio reads them)."""
    options: dict[str, Any] = {
        "max_file_size": MAX_UPLOAD,
        "allowed_paths": [str(EXAMPLES_DIR)],
        "css": CSS,
        "theme": gr.themes.Soft(primary_hue="blue"),
        "footer_links": ["api", "gradio"],
    }
    options.update(kwargs)
    return demo.launch(**options)


def main() -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    demo = build_demo(preload=True, background=True)
    log.info("Page built in %.1f s (the model loads and warms up meanwhile)", time.perf_counter() - started)
    launch(demo)


if __name__ == "__main__":
    main()
