"""What the app's Model tab shows for one bundle folder, built without any UI toolkit.

:func:`model_info` reads the folder's ``config.json``, ``README.md`` (the model card) and ``metrics.json``
and returns the key facts as Markdown, the headline, per-class and paper tables, the confusion matrix
and reliability figures, and the card's body. The app only lays them out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import TumorlibError
from ..figures import confusion_matrix_figure, reliability_figure
from ..modelcard import split_front_matter
from ..tables import paper_table, per_class_table
from .files import ResultsError, load_metrics
from .names import METRICS_JSON
from .sentences import headline
from .values import conformal_level, format_pct, number, reliability, section

__all__ = ["ModelInfo", "model_facts", "model_info", "read_bundle_metrics", "shown_source"]

# tumorlib.bundle's CONFIG_NAME and WEIGHTS_NAME, spelled out: importing that module pulls in torch.
_CONFIG_NAME = "config.json"
_WEIGHTS_NAME = "model.safetensors"


@dataclass
class ModelInfo:
    """What the Model tab shows for one model (``metrics`` is its metrics.json, None when it has none)."""

    facts: str
    headline: pd.DataFrame | None = None
    per_class: pd.DataFrame | None = None
    paper: pd.DataFrame | None = None
    confusion: Any = None
    reliability: Any = None
    card: str = ""
    metrics_note: str = ""
    metrics: dict | None = None


def model_info(folder: str | Path, name: str, source: str) -> ModelInfo:
    """The Model tab's content for the bundle in ``folder``, offered as ``name`` from ``source``.

    Reads files only: no weights are loaded. An unreadable config.json gives facts that say so.
    """
    folder = Path(folder)
    try:
        config = json.loads((folder / _CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return ModelInfo(facts=f"**Model `{name}`: config.json unreadable ({err})**")
    card_front, card_body = {}, ""
    readme = folder / "README.md"
    if readme.is_file():
        try:
            front, card_body = split_front_matter(readme.read_text(encoding="utf-8"))
            card_front = front or {}
        except (OSError, ValueError, UnicodeDecodeError) as err:
            card_body = f"The model card could not be read ({err})."
    metrics, metrics_note = read_bundle_metrics(folder)
    facts = model_facts(name, source, config, card_front, metrics)
    info = ModelInfo(facts=facts, card=card_body.strip(), metrics_note=metrics_note, metrics=metrics)
    if metrics is None:
        return info
    try:
        cards = headline(metrics)
        info.headline = pd.DataFrame(
            [[c["label"], c["value"], c["ci"], c["help"]] for c in cards],
            columns=["Metric", "Value", "Interval", "What it means"],
        )
        info.per_class = per_class_table(metrics)
        info.paper = paper_table(metrics)
        info.confusion = confusion_matrix_figure(metrics)
        info.reliability = reliability_figure(metrics) if reliability(metrics) else None
    except ResultsError as err:
        # A file that parses but is not what evaluation writes: say so rather than show half of it.
        info.headline = info.per_class = info.paper = info.confusion = info.reliability = None
        info.metrics_note = f"The metrics file could not be read: {err}"
    return info


def read_bundle_metrics(folder: str | Path) -> tuple[dict | None, str]:
    """(a bundle's metrics.json or None, a note to show when there is none to show)."""
    path = Path(folder) / METRICS_JSON
    if not path.is_file():
        return None, (
            "This model comes without a metrics.json: it has not been evaluated here, so no performance "
            "figures are shown."
        )
    try:
        return load_metrics(path), ""
    except TumorlibError as err:
        return None, f"The metrics file could not be read: {err}"


# --------------------------------------------------------------------------- a bundle's key facts


def model_facts(
    name: str,
    source: str,
    config: Mapping,
    front: Mapping,
    metrics: Mapping | None,
) -> str:
    """Key facts of a model bundle as a Markdown table: its config.json, README front matter and metrics."""
    tumorlib_section = section(config, "tumorlib")
    cfg = section(config, "pretrained_cfg")
    rows = [("Model", f"`{name}`"), ("Architecture", f"{config.get('architecture', '?')} (timm)")]
    names = config.get("label_names") or []
    rows.append(("Classes", ", ".join(f"`{label}`" for label in names) or "?"))
    size = cfg.get("input_size")
    if isinstance(size, list) and len(size) == 3:
        rows.append(("Input", f"{size[1]} × {size[2]} px, {size[0]} channels"))
    steps = [key.replace("_", " ") for key, on in section(tumorlib_section, "preprocess").items() if on is True]
    if steps:
        rows.append(("Preprocessing", ", ".join(steps)))
    temp = number(tumorlib_section.get("temperature"))
    if temp is not None:
        rows.append(("Calibration", f"temperature scaling, T = {temp:.3g}"))
    sets = section(tumorlib_section, "conformal")
    if sets:
        rows.append(("Prediction sets", _sets_fact(sets, metrics)))
    weights = section(tumorlib_section, "files", _WEIGHTS_NAME)
    if weights:
        nbytes = number(weights.get("bytes"))
        mb = f"{nbytes / 2**20:.1f} MB" if nbytes is not None else ""
        sha = f"SHA-256 `{str(weights.get('sha256', ''))[:12]}…`" if weights.get("sha256") else ""
        dtype = tumorlib_section.get("weights_dtype", "")
        rows.append(("Weights", ", ".join(x for x in (f"{dtype} safetensors".strip(), mb, sha) if x)))
    rows.append(("Not-an-MRI check", _gate_fact(section(tumorlib_section, "gate"))))
    localiser_config = section(tumorlib_section, "localiser")
    if localiser_config:
        stage = localiser_config.get("stage")
        where = f" on stage {stage}" if isinstance(stage, int) and not isinstance(stage, bool) else ""
        rows.append(("Tumour map", f"yes, a head trained on tumour masks{where}"))
    else:
        rows.append(("Tumour map", "none: the heatmap is Grad-CAM"))
    if front.get("license"):
        rows.append(("Licence", str(front["license"])))
    if metrics is not None:
        n, groups = metrics.get("n"), metrics.get("n_groups")
        what = f"{n} test slices" if n is not None else "a held-out test set"
        if groups is not None:
            what += f" from {groups} patients"
        rows.append(("Evaluated on", what))
    rows.append(("Source", f"`{shown_source(source)}`"))
    body = "\n".join(f"| {key} | {cell} |" for key, cell in rows)
    return "| | |\n|---|---|\n" + body


def shown_source(source: str) -> str:
    """Where a model came from, as a public page may show it: a Hub repo id as it is, a local folder by its
    name only (a path would tell every visitor how this machine's disk is laid out)."""
    text = str(source).strip()
    local = Path(text).expanduser()
    looks_local = local.is_absolute() or text.startswith((".", "~")) or "\\" in text or text.count("/") > 1
    if local.is_dir():
        return local.resolve().name or text
    if looks_local:
        return text.replace("\\", "/").rstrip("/").rpartition("/")[2] or text
    return text.removeprefix("hf-hub:")


def _sets_fact(stored: Mapping, metrics: Mapping | None) -> str:
    """The facts table's cell for the bundle's conformal prediction sets (thresholds from config.json)."""
    try:  # ResultsError is a ValueError: a malformed section must not hide the rest of the Model tab
        levels = ", ".join(f"{100 * float(key):g}%" for key in sorted(section(stored, "levels"), key=float))
        measured = number(conformal_level(metrics or {}, 0.95, mondrian=True).get("coverage"))
    except (TypeError, ValueError):
        return "unreadable conformal thresholds or figures"
    how = "a threshold per class" if stored.get("method", "mondrian") == "mondrian" else "one threshold"
    n = stored.get("n")
    text = f"{levels}, {how}" + (f", fitted on {n} out-of-fold slices" if n else "")
    return text + (f"; the 95% set holds the true class on {format_pct(measured)} (measured)" if measured else "")


def _gate_fact(gate_config: Mapping) -> str:
    """The facts table's cell for the bundle's not-an-MRI gate (from config.json, set at shipping)."""
    if not gate_config:
        return "none: any image gets one of the classes"
    held, fitted_on = gate_config.get("n_heldout"), gate_config.get("thresholds_from")
    where = f" set on {held} slices" if held else ""
    if held and fitted_on:
        where += f" ({fitted_on})"
    refused = number(gate_config.get("mri_refused_crossfit"))
    if refused is not None:
        where += f"; refuses {format_pct(refused)} of real MRI slices (cross-fitted)"
    return f"yes, thresholds{where}"
