"""The app's About tab: how an answer is made, its limits, what is kept of an upload, the API.

Plain Markdown built from the library's own facts (the formats the decoder reads); no UI toolkit here.
"""

from __future__ import annotations

from .decode import SUPPORTED_FORMATS


def api_snippet(url: str = "http://127.0.0.1:7860/") -> str:
    """Python that calls the app's ``/predict`` at ``url`` (a Markdown code block)."""
    return (
        "```python\n"
        "from gradio_client import Client, handle_file\n\n"
        f'client = Client("{url}")  # or the Space id, e.g. "owner/space-name"\n'
        'label, overlay, summary = client.predict(handle_file("slice.png"), api_name="/predict")\n'
        'print(label["label"])  # the predicted class\n'
        'print({c["label"]: c["confidence"] for c in label["confidences"]})  # every class\n'
        "```"
    )


def about(minutes: int) -> str:
    """The About tab's Markdown; ``minutes``: within how long uploads and results are deleted."""
    return f"""
### How it works
1. Your file is decoded by `tumorlib` itself ({SUPPORTED_FORMATS}; 16-bit PNG and DICOM keep their full
   range), never through an 8-bit browser copy.
2. A check judges whether the image looks like a brain MRI slice at all; if not, no class is given.
3. A convolutional network fine-tuned on public brain MRI slices gives a probability for each class.
   The probabilities are calibrated (temperature scaling on held-out data), so 80% means the model is right
   about 80% of the time on data like its test set, not on your scanner.
4. A heatmap over your image, one of two kinds (the summary says which is shown, and what it was measured
   to do on held-out patients of the model's own evaluation):
   - **Grad-CAM** of a class shows which regions pushed the network towards that class. It shows where the
     network looked, not where a tumour is: checked against tumour masks, its peak often misses the tumour.
   - The **tumour map**, for models that have one, is drawn by a small head trained on tumour masks, and
     checked against the masks of patients it never saw. It is shown by default because it is the one
     measured to find tumours; it estimates where a tumour is likely, not why a class was chosen, and it is
     not a segmentation for clinical use.

### Limits
Single 2-D slices only; a closed set of classes (anything else still gets one of them); trained and
evaluated on public data from a few hospitals. See the Model tab for the figures and the model card.

### Privacy
Uploads are not stored: they are processed in memory, not logged, not used for training. The copies a
web app needs (the uploaded file, its heatmap, a batch CSV) sit in a folder of this server's temporary
folder that belongs to the running app alone, and are deleted within {minutes} minutes; if the server
stops abruptly, whatever it left is deleted when the app starts again. There is no flagging.

### Use it from Python
{api_snippet()}

Errors (an unreadable file, an image that is not a brain MRI) raise an exception in the client with
the reason, never a label. `/batch` takes a list of files (images or zips) and a model name and returns
the results table and a CSV.
"""
