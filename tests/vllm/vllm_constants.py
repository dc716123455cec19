"""What the real vLLM tests share (a plain module: conftest files are not importable)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"
LOOKUP = {"prompt_lookup": 5, "speedup_sample": 0}
"""n-gram speculation; the speed-up timing is off (it is bench/vllm_throughput.py's job)."""
