"""Corpus perplexity by evalkit against a raw forward loop on the same windows, in one process.

    .venv/bin/python bench/perplexity_loop.py [--corpus golden/corpus.jsonl] [--max-length 512]

evalkit: the ``perplexity`` metric's ``score_candidate`` (rolling windows as
lm-evaluation-harness defines them, sorted by length, batched). Raw: the same windows
(``rolling_windows``), one forward pass each, ``log_softmax``, the continuation tokens'
log-probabilities summed: what a user writes with torch alone. Prints the time ratio (target
at most 1.10) and the largest relative difference of the per-text log-likelihoods (target
1e-6). ``--max-length`` caps the window (the model's own maximum by default).

``--memory-tokens N`` (0 skips it): peak RSS of each side alone, in a child process, on one
text of N tokens (the corpus repeated) in windows of ``--memory-window`` tokens; target: evalkit
at most 1.3x the raw loop.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _env  # first: the environment before transformers reads it

REPO = _env.REPO

from _measure import load_average, peak_rss_mb  # noqa: E402

from evalkit.candidates.hf import HFCandidate  # noqa: E402
from evalkit.candidates.models import EMBEDDED_NAME  # noqa: E402
from evalkit.golden import load_golden  # noqa: E402
from evalkit.metrics import Sample, create, split_score  # noqa: E402
from evalkit.metrics.loglikelihood import model_max_length, rolling_windows  # noqa: E402
from evalkit.metrics.teacher_forcing import prefix_token  # noqa: E402
from evalkit.spec import CandidateSpec, GenerationSpec  # noqa: E402


def raw_loglikelihoods(model: Any, tokenizer: Any, texts: list[str], limit: int) -> list[float]:
    import torch

    prefix = prefix_token(tokenizer)
    device = next(model.parameters()).device
    totals = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        total = 0.0
        for window in rolling_windows(ids, prefix, limit):
            inputs = (window.context + window.continuation)[:-1]
            with torch.inference_mode():
                logits = model(input_ids=torch.tensor([inputs], device=device)).logits[0]
            logprobs = torch.log_softmax(logits[-len(window.continuation) :].float(), dim=-1)
            target = torch.tensor(window.continuation, device=device)
            total += float(logprobs.gather(1, target[:, None]).double().sum())
        totals.append(total)
    return totals


def spec(device: str | None) -> CandidateSpec:
    """float32 on every device: the target is equal values (bfloat16 on a GPU would differ)."""
    return CandidateSpec(model=EMBEDDED_NAME, device=device, dtype="float32")


def memory_child(side: str, tokens: int, window: int, batch_size: int, device: str | None) -> None:
    """One side alone on a long text; prints its peak RSS in MB."""
    candidate = HFCandidate("base", spec(device), REPO)
    model, tokenizer = candidate.loaded()
    corpus = " ".join(str(e.fields["text"]) for e in load_golden(REPO / "golden" / "corpus.jsonl"))
    ids = tokenizer(corpus, add_special_tokens=False)["input_ids"]
    text = tokenizer.decode((ids * (tokens // len(ids) + 1))[:tokens])
    if side == "evalkit":
        metric = create("perplexity", {"field": "text", "max_length": window})
        sample = Sample("long", "", (), fields={"text": text})
        metric.score_candidate([sample], candidate, GenerationSpec(batch_size=batch_size))  # type: ignore[union-attr]
    else:
        raw_loglikelihoods(model, tokenizer, [text], window)
    print(peak_rss_mb())  # VmHWM: this process's own peak, not the parent's (see _measure.py)


def memory(tokens: int, window: int, batch_size: int, device: str | None) -> None:
    peaks = {}
    for side in ("evalkit", "raw"):
        command = [sys.executable, __file__, "--child", side, "--memory-tokens", str(tokens),
                   "--memory-window", str(window), "--batch-size", str(batch_size),
                   *(["--device", device] if device else [])]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        peaks[side] = float(done.stdout.split()[-1])
    ours, raw = peaks["evalkit"], peaks["raw"]
    print(f"  peak RSS, {tokens} tokens in windows of {window}: evalkit {ours:,.0f} MB, "
          f"raw loop {raw:,.0f} MB, ratio {ours / raw:.2f} (target <= 1.3)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default=str(REPO / "golden" / "corpus.jsonl"))
    parser.add_argument("--field", default="text")
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--memory-tokens", type=int, default=8192)
    parser.add_argument("--memory-window", type=int, default=2048)
    parser.add_argument("--child", choices=["evalkit", "raw"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sizes = args.memory_tokens, args.memory_window, args.batch_size
        memory_child(args.child, *sizes, args.device)
        return
    candidate = HFCandidate("base", spec(args.device), REPO)
    model, tokenizer = candidate.loaded()
    limit = args.max_length or model_max_length(model, tokenizer)
    examples = load_golden(Path(args.corpus))
    samples = [Sample(e.id, "", (), fields=e.fields) for e in examples]
    options = {"field": args.field, **({"max_length": limit} if args.max_length else {})}
    metric = create("perplexity", options)
    params = GenerationSpec(batch_size=args.batch_size)

    texts = [str(e.fields[args.field]) for e in examples]
    raw_loglikelihoods(model, tokenizer, [texts[0][:200]], limit)  # warm-up, for both sides
    # Alternating, best of the rounds: load from other jobs only ever adds time.
    ours_s, raw_s = float("inf"), float("inf")
    for _ in range(args.rounds):
        start = time.perf_counter()
        scores = metric.score_candidate(samples, candidate, params)  # type: ignore[union-attr]
        ours_s = min(ours_s, time.perf_counter() - start)
        start = time.perf_counter()
        theirs = raw_loglikelihoods(model, tokenizer, texts, limit)
        raw_s = min(raw_s, time.perf_counter() - start)
    ours = [float(split_score(s)[1]["loglikelihood"]) for s in scores]
    worst = max(abs(a - b) / abs(b) for a, b in zip(ours, theirs, strict=True))
    n_tokens = sum(int(split_score(s)[1]["n_tokens"]) for s in scores)
    print(f"perplexity: {len(texts)} texts, {n_tokens} tokens, windows of {limit}, "
          f"batch {args.batch_size}, best of {args.rounds} rounds ({load_average()})")  # fmt: skip
    print(f"  evalkit perplexity metric     {ours_s:8.2f} s")
    print(f"  raw forward loop (batch 1)    {raw_s:8.2f} s")
    print(f"  evalkit / raw                 {ours_s / raw_s:8.3f}  (target <= 1.10)")
    print(f"  max relative difference of per-text log-likelihoods  {worst:.2e}  (target 1e-6)")
    candidate.close()
    if args.memory_tokens:
        memory(args.memory_tokens, args.memory_window, args.batch_size, args.device)


if __name__ == "__main__":
    main()
