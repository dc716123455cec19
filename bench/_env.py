"""Imported first by the bench scripts that load models: this checkout's evalkit, no model hub,
no price list download, no progress bars. Values already in the environment stand. It must run
before transformers or litellm is imported, which read these once."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "EVALKIT_PROGRESS": "0",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # a raw loop's "Loading weights" bars
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}
for key, value in OFFLINE.items():
    os.environ.setdefault(key, value)
