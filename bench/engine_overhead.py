"""evalkit generating a suite against a hand-written batched ``model.generate`` loop, in one
process, on the same prompts, batch size and greedy settings.

    .venv/bin/python bench/engine_overhead.py [--suite suites/capitals.yaml] [--limit 32]
                                              [--device cpu|cuda]

1. evalkit: ``run_suite`` on the suite's first N examples, candidate ``base`` only, one cheap
   metric (exact_match), no cache: prepare, load, render, generate (length-sorted batches),
   score, write run.json. Timed whole, and its generation step alone.
2. The raw loop a user would write: load the same converted folder with transformers, apply the
   chat template, left-pad, ``model.generate`` in batches of the suite's batch_size (longest
   first, as evalkit batches, so the batches are the same and greedy outputs must be equal),
   decode. Timed whole (load + loop), and the loop alone.
3. The same raw loop in dataset order (unsorted), and one request at a time: the gain of
   length-sorted batching.

Prints the ratios (target: evalkit / raw at most 1.10) and how many outputs are identical.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("EVALKIT_PROGRESS", "0")

import yaml  # noqa: E402

from evalkit.cache import Cache  # noqa: E402
from evalkit.candidates.models import EMBEDDED_NAME, resolve_model  # noqa: E402
from evalkit.run import RunOptions, prepare_suite, run_suite  # noqa: E402


def evalkit_run(suite: Path, limit: int, device: str | None, out: Path) -> tuple[float, Any]:
    spec = yaml.safe_load(suite.read_text(encoding="utf-8"))
    spec["dataset"] = str((suite.parent / spec["dataset"]).resolve())
    spec["candidates"] = {"base": {"model": EMBEDDED_NAME}}
    spec["metrics"] = [{"exact_match": {"normalize": "squad"}}]
    spec.pop("gates", None)
    spec.pop("compare_to", None)
    path = out / "bench.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    options = RunOptions(report_dir=out, cache=Cache(None), device=device, progress=False)
    start = time.perf_counter()
    result = run_suite(prepare_suite(path, limit=limit), options)
    return time.perf_counter() - start, result.candidates["base"]


class RawLoop:
    """What a user writes with transformers alone."""

    def __init__(self, folder: Path, device: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        start = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        self.model = self.model.to(device).eval()
        self.device = device
        self.pad = self.tokenizer.pad_token_id
        if self.pad is None:
            self.pad = self.tokenizer.eos_token_id
        self.load_s = time.perf_counter() - start

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(self, prompts: list[list[int]], batch: int, max_new: int) -> list[str]:
        import torch

        outputs: list[str] = []
        for start in range(0, len(prompts), batch):
            rows = prompts[start : start + batch]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):
                ids[i, width - len(row) :] = torch.tensor(row)
                mask[i, width - len(row) :] = 1
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    max_new_tokens=max_new,
                    do_sample=False,
                    pad_token_id=self.pad,
                )
            for row in out[:, width:].tolist():
                outputs.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return outputs


def timed(work: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = work()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--suite", default=str(REPO / "suites" / "capitals.yaml"))
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    args = parser.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    suite = Path(args.suite).resolve()
    prepared = prepare_suite(suite, limit=args.limit)
    params = prepared.loaded.spec.generation
    with tempfile.TemporaryDirectory(prefix="evalkit-bench-") as tmp:
        evalkit_s, run = evalkit_run(suite, args.limit, device, Path(tmp))
    ours = {e.id: e.output for e in run.examples}

    raw = RawLoop(resolve_model(EMBEDDED_NAME).path, device)
    chats = {
        r.id: [{"role": m.role, "content": m.content} for m in r.messages]
        for r in prepared.requests
    }
    encoded = {i: raw.encode(chat) for i, chat in chats.items()}
    ordered = sorted(encoded, key=lambda i: len(encoded[i]), reverse=True)
    batch, new = params.batch_size, params.max_new_tokens
    sorted_s, texts = timed(lambda: raw.generate([encoded[i] for i in ordered], batch, new))
    theirs = dict(zip(ordered, texts, strict=True))
    plain = list(encoded)
    unsorted_s, _ = timed(lambda: raw.generate([encoded[i] for i in plain], batch, new))
    single_s, _ = timed(lambda: raw.generate([encoded[i] for i in plain], 1, new))

    same = sum(ours[i] == theirs[i] for i in ours)
    raw_whole = raw.load_s + sorted_s
    print(f"engine overhead: {suite.name}, {len(ours)} prompts, batch {batch}, greedy, {new} new "
          f"tokens, {device}, torch threads {torch.get_num_threads()}")  # fmt: skip
    for label, seconds in [
        ("evalkit run_suite (prepare, load, generate, score, run.json)", evalkit_s),
        ("evalkit generation step", run.timings.generate_s),
        ("raw load + sorted batched loop", raw_whole),
        ("raw sorted batched loop", sorted_s),
        ("raw loop in dataset order", unsorted_s),
        ("raw loop one request at a time", single_s),
    ]:
        print(f"  {label:<62} {seconds:8.2f} s")
    print(f"  evalkit / raw (whole)              {evalkit_s / raw_whole:6.3f}  (target <= 1.10)")
    print(f"  evalkit / raw (generation only)    {run.timings.generate_s / sorted_s:6.3f}")
    print(f"  identical outputs                  {same}/{len(ours)}")
    print(f"  unsorted / length-sorted batches   {unsorted_s / sorted_s:6.3f}")
    print(f"  one at a time / sorted batches     {single_s / sorted_s:6.3f}")
    for i in [i for i in ours if ours[i] != theirs[i]][:5]:
        print(f"  differs {i}: evalkit {ours[i]!r} raw {theirs[i]!r}")


if __name__ == "__main__":
    main()
