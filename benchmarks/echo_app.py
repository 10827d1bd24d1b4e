"""The framework's floor for ``/predict``: a Gradio app whose one ``gr.File`` input answers with the file's size.

Launched and queried by :func:`benchmarks.measure.serve` exactly as ``app.py`` is, so the difference
between the two round trips is what the real app adds (decoding, the model, the heatmap, the summary).
"""

from __future__ import annotations

import os

import gradio as gr


def size_of(path: str | None) -> int:
    return os.path.getsize(path) if path else 0


def build() -> gr.Blocks:
    with gr.Blocks(analytics_enabled=False) as demo:
        upload = gr.File(type="filepath")
        size = gr.Number()
        gr.Button().click(size_of, inputs=upload, outputs=size, api_name="predict")
    return demo


if __name__ == "__main__":
    build().queue().launch()
