"""The names of the files in a run, results or bundle folder, spelled once.

The trainer writes them, the evaluation, shipping, publishing and ablation tools copy and read them, and the
dashboard finds runs by them; a folder is recognised by these names alone, so every one of those places
takes the name from here.
"""

__all__ = ["HISTORY_CSV", "METRICS_JSON", "PREDICTIONS_CSV", "RUN_CONFIG", "STATUS_JSON"]

#: The metrics evaluation computes (see :mod:`tumorlib.results`); in a fold folder, written last, so its
#: presence marks the fold complete.
METRICS_JSON = "metrics.json"
#: One row per epoch (and fold): losses, accuracies, learning rate, seconds.
HISTORY_CSV = "history.csv"
#: One row per evaluated image: true and predicted label, served probabilities, raw logits.
PREDICTIONS_CSV = "predictions.csv"
#: Whether a run is running, complete, partial or failed, with when and why.
STATUS_JSON = "status.json"
#: A run's resolved options, written once at its start; the evaluation, ablation and staging tools read it.
RUN_CONFIG = "config.yaml"
