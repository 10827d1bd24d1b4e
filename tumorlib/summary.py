"""The words under an answer: the class in plain language, how sure the model is, its prediction set
(the classes it cannot rule out at 95% coverage), which check ran, and what the heatmap shown was
measured to do (from the model's ``metrics.json``). Markdown, no UI toolkit."""

from __future__ import annotations

from collections.abc import Mapping

from . import results
from .pipeline import Analysis, Heatmap

#: One plain-language line per class, shown under the prediction.
CLASS_DESCRIPTIONS = {
    "glioma": "A tumour that grows from the glial cells, the cells that support the brain's nerve cells.",
    "meningioma": (
        "A tumour of the meninges, the membranes around the brain and spinal cord; most are slow-growing and benign."
    ),
    "pituitary": "A tumour of the pituitary gland at the base of the brain, most often a benign adenoma.",
    "no_tumor": (
        "The model found none of the tumour types it knows on this slice. That is not an all-clear: it "
        "only knows these few classes and sees one slice."
    ),
}
#: Below this gap between the two most probable classes the summary says the model is unsure.
UNSURE_GAP = 0.2
#: The coverage level of the prediction set the summary shows (one of :data:`tumorlib.conformal.LEVELS`).
SET_LEVEL = 0.95


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def pretty(label: str) -> str:
    return label.replace("_", " ")


def gate_line(analysis: Analysis) -> str:
    """What the not-an-MRI check said (or why none ran)."""
    verdict = analysis.gate
    if verdict is None:
        return analysis.probabilities.check_note
    return f"Brain-MRI check passed (score {float(verdict.score):.2f}, limit {float(verdict.threshold):.2f})."


def heatmap_line(analysis: Analysis, heatmap: Heatmap, metrics: Mapping | None) -> str:
    """Which heatmap is shown, what it is, and what the model's metrics.json measured it to do."""
    metrics = metrics or {}
    if heatmap.kind == "map":
        scores = results.section(metrics, "localiser")
        peak = results.number(getattr(heatmap.explanation, "peak", None))
        head = "**Heatmap: tumour map**" + (f" (peak {peak:.2f})" if peak is not None else "")
        text = f"{head}: a head trained on tumour masks estimates the share of tumour under each pixel."
        measured = results.pointing_sentence(scores)
        if measured:
            text += " ".join(("", measured, results.peak_sentence(scores))).rstrip()
        else:
            text += " This model's metrics.json has no check of the map against tumour masks."
        return text + (
            " It shows where a tumour is likely, not why the class was chosen, and it is not a segmentation"
            " for clinical use."
        )
    target = pretty(str(getattr(heatmap.explanation, "target", None) or analysis.top))
    text = (
        f"**Heatmap: Grad-CAM of {target}**: the regions that pushed the network towards this class. "
        "It shows where the network looked, not where a tumour is."
    )
    measured = results.pointing_sentence(results.section(metrics, "cam"))
    return f"{text} {measured}" if measured else text


def _either(names: list[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b or c"``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def set_line(analysis: Analysis, metrics: Mapping | None = None, level: float = SET_LEVEL) -> str:
    """The prediction set at ``level`` in plain words, what its coverage means and, from the model's
    metrics.json, how often such sets held the true class; empty when the model has no thresholds."""
    chosen = analysis.probabilities.prediction_set(level)
    if not chosen:
        return ""
    shown = f"{100 * level:g}%"
    if len(chosen) == 1:
        text = f"**{shown} prediction set: {pretty(chosen[0])} alone.**"
    else:
        text = f"**{shown} prediction set: {_either([pretty(label) for label in chosen])}** (unsure between these)."
    text += f" On new patients like those it was evaluated on, the true class is in this set {shown} of the time."
    try:
        measured = results.coverage_sentence(metrics or {}, level)
    except results.ResultsError:  # a malformed metrics file must not cost the answer its set
        measured = ""
    return f"{text} <small>{measured}</small>" if measured else text


def summary(analysis: Analysis, heatmap: Heatmap | None = None, metrics: Mapping | None = None) -> str:
    """The Markdown under the label: class, description, uncertainty, the prediction set, timing, the check,
    and the heatmap."""
    probs = sorted(analysis.probabilities.items(), key=lambda kv: kv[1], reverse=True)
    (top, p_top), second = probs[0], (probs[1] if len(probs) > 1 else None)
    lines = [f"### {pretty(top).capitalize()}: {_pct(p_top)}"]
    if top in CLASS_DESCRIPTIONS:
        lines.append(CLASS_DESCRIPTIONS[top])
    if second is not None and p_top - second[1] < UNSURE_GAP:
        lines.append(f"**The model is unsure:** {pretty(second[0])} is close behind at {_pct(second[1])}.")
    prediction_set = set_line(analysis, metrics)
    if prediction_set:
        lines.append(prediction_set)
    timing = f"classified in {_ms(analysis.seconds)}"
    shown = heatmap is not None and heatmap.explanation is not None
    if shown:
        timing += f", {'tumour map' if heatmap.kind == 'map' else 'Grad-CAM'} in {_ms(heatmap.seconds)}"
    where = f"Model `{analysis.model}` " if analysis.model else "Model "
    lines.append(f"<small>{where}({analysis.precision} on {analysis.device}); {timing}. {gate_line(analysis)}</small>")
    if shown:
        lines.append(f"<small>{heatmap_line(analysis, heatmap, metrics)}</small>")
    if heatmap is not None and heatmap.note:
        lines.append(f"<small>{heatmap.note}</small>")
    return "\n\n".join(lines)
