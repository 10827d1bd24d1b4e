"""Training, evaluation and Hub publishing for tumorlib models."""
