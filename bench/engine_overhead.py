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

evalkit and the raw loop alternate over ``--rounds`` (the raw model stays loaded; one warm-up
generation first, so neither side pays for the first call's thread and allocator set-up), and
each side's best round counts: load from other jobs only ever adds time. Prints the ratios
(target: evalkit / raw at most 1.10) and how many outputs are identical.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import _env  # first: the environment before transformers reads it

REPO = _env.REPO

import yaml  # noqa: E402
from _measure import load_average  # noqa: E402

from evalkit.cache import Cache  # noqa: E402
from evalkit.candidates.hf import HFCandidate  # noqa: E402
from evalkit.candidates.models import EMBEDDED_NAME, resolve_model  # noqa: E402
from evalkit.run import RunOptions, prepare_suite, run_suite  # noqa: E402
from evalkit.spec import CandidateSpec  # noqa: E402


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

    def __init__(self, folder: Path, device: str, dtype: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # Loaded twice, the second timed: the first pays for reading the files and transformers'
        # first model build, which evalkit's loads (later, in the same process) do not.
        for _ in range(2):
            start = time.perf_counter()
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.tokenizer.padding_side = "left"
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
            self.model = self.model.to(device).eval()
            self.load_s = time.perf_counter() - start
        self.device = device
        self.pad = self.tokenizer.pad_token_id
        if self.pad is None:
            self.pad = self.tokenizer.eos_token_id

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
    parser.add_argument("--rounds", type=int, default=2, help="evalkit and raw, alternating")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    args = parser.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    suite = Path(args.suite).resolve()
    prepared = prepare_suite(suite, limit=args.limit)
    params = prepared.loaded.spec.generation
    # evalkit's own dtype for the device (float32 on CPU, bfloat16 or float16 on a GPU)
    dtype = HFCandidate("base", CandidateSpec(model=EMBEDDED_NAME, device=device), REPO).dtype_name
    raw = RawLoop(resolve_model(EMBEDDED_NAME).path, device, dtype)
    chats = {
        r.id: [{"role": m.role, "content": m.content} for m in r.messages]
        for r in prepared.requests
    }
    encoded = {i: raw.encode(chat) for i, chat in chats.items()}
    ordered = sorted(encoded, key=lambda i: len(encoded[i]), reverse=True)
    batch, new = params.batch_size, params.max_new_tokens
    raw.generate([encoded[ordered[-1]]], 1, 2)  # warm-up: threads and allocator, for both sides

    def ours() -> tuple[float, float, dict[str, str]]:
        with tempfile.TemporaryDirectory(prefix="evalkit-bench-") as tmp:
            seconds, run = evalkit_run(suite, args.limit, device, Path(tmp))
        return seconds, run.timings.generate_s, {e.id: e.output for e in run.examples}

    def theirs() -> tuple[float, dict[str, str]]:
        seconds, texts = timed(lambda: raw.generate([encoded[i] for i in ordered], batch, new))
        return seconds, dict(zip(ordered, texts, strict=True))

    # Alternating (ABBA...), best of the rounds: load from other jobs only ever adds time.
    evalkit_s, generate_s, sorted_s = [], [], []
    for round_ in range(args.rounds):
        for side in ("evalkit", "raw") if round_ % 2 == 0 else ("raw", "evalkit"):
            if side == "evalkit":
                whole, generating, outputs = ours()
                evalkit_s.append(whole)
                generate_s.append(generating)
            else:
                seconds, raw_outputs = theirs()
                sorted_s.append(seconds)
    plain = list(encoded)
    unsorted_s, _ = timed(lambda: raw.generate([encoded[i] for i in plain], batch, new))
    single_s, _ = timed(lambda: raw.generate([encoded[i] for i in plain], 1, new))
    report(
        f"engine overhead: {suite.name}, {len(outputs)} prompts, batch {batch}, greedy, {new} "
        f"new tokens, {device} {dtype}, torch threads {torch.get_num_threads()}, best of "
        f"{args.rounds} alternating rounds ({load_average()})",
        (min(evalkit_s), min(generate_s), raw.load_s, min(sorted_s), unsorted_s, single_s),
        (outputs, raw_outputs),
    )


def report(title: str, seconds: tuple[float, ...], outputs: tuple[dict[str, str], ...]) -> None:
    evalkit_s, generate_s, load_s, sorted_s, unsorted_s, single_s = seconds
    ours, theirs = outputs
    same = sum(ours[i] == theirs[i] for i in ours)
    print(title)
    for label, value in [
        ("evalkit run_suite (prepare, load, generate, score, run.json)", evalkit_s),
        ("evalkit generation step", generate_s),
        ("raw load + sorted batched loop", load_s + sorted_s),
        ("raw sorted batched loop", sorted_s),
        ("raw loop in dataset order", unsorted_s),
        ("raw loop one request at a time", single_s),
    ]:
        print(f"  {label:<62} {value:8.2f} s")
    whole = evalkit_s / (load_s + sorted_s)
    print(f"  evalkit / raw (whole)              {whole:6.3f}  (target <= 1.10)")
    print(f"  evalkit / raw (generation only)    {generate_s / sorted_s:6.3f}")
    print(f"  identical outputs                  {same}/{len(ours)}")
    print(f"  unsorted / length-sorted batches   {unsorted_s / sorted_s:6.3f}")
    print(f"  one at a time / sorted batches     {single_s / sorted_s:6.3f}")
    for i in [i for i in ours if ours[i] != theirs[i]][:5]:
        print(f"  differs {i}: evalkit {ours[i]!r} raw {theirs[i]!r}")


if __name__ == "__main__":
    main()
