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
Uploads are not stored beyond their use: never logged, never used for training, no flagging. What is
kept, where, and for how long:
- **Files** (each uploaded file, the heatmap shown, a batch CSV): on this server's disk, in a folder of its
  temporary folder that belongs to the running app alone (`tumour-app/` inside `GRADIO_TEMP_DIR`),
  deleted within {minutes} minutes of being written, and all of it when the app stops normally.
- **After a crash** (the server killed, out of memory, a power cut): the files stay on the disk until the
  app starts again there, which deletes them before it answers its first request.
- **In memory**: the decoded image and its heatmaps, for redrawing the page, at most {minutes} minutes
  after your last change.

### Use it from Python
{api_snippet()}

Errors (an unreadable file, an image that is not a brain MRI) raise an exception in the client with
the reason, never a label. `/batch` takes a list of files (images or zips) and a model name and returns
the results per slice (a table and a CSV), a summary, one answer per DICOM series or zip folder (the mean
of the calibrated probabilities of the slices the check accepts) and each group's best slice with its
heatmap. A multi-frame DICOM is one series of its frames there; the Classify tab reads its middle frame.
"""
