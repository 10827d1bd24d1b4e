"""``python -m train``: see train/train.py."""

import sys

from .train import cli

sys.exit(cli())
