"""Lexical metrics at scale: evalkit's metrics against the libraries called directly, on the same
output/reference pairs, in one process.

    .venv/bin/python bench/lexical_scale.py [--pairs 10000] [--semantic 2000] [--memory 100000]

Pairs are synthetic sentences (seeded) with edits, so scores spread over the range.
- BLEU and chrF (sacrebleu ``sentence_bleu`` / ``sentence_chrf``), ROUGE-L (rouge-score's
  ``RougeScorer(["rougeL"], use_stemmer=True).score_multi``: evalkit's default stemming),
  edit similarity (rapidfuzz ``Levenshtein.normalized_similarity``): evalkit's ``score`` over
  the pairs against a plain loop over the library call; the values must be equal. Target: at
  most 1.2x.
- Semantic similarity (all-MiniLM-L6-v2): pairs per second, embeddings not cached.
- Peak RSS (VmHWM, see _measure.py) of scoring ``--memory`` examples with every lexical metric
  (exact_match, contains, regex, BLEU, chrF, TER, ROUGE-1/2/L/Lsum, edit similarity), one after
  another in a child process (target: under 2 GB).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import _env  # first: the environment before transformers reads it

REPO = _env.REPO

from _measure import load_average, peak_rss_mb  # noqa: E402

from evalkit.metrics import Sample, create, split_score  # noqa: E402

WORDS = str.split(
    "the of and a to in is was he for it with as his on be at by had are but from or have an "
    "they which one you were her all she there would their we him been has when who will more "
    "river capital city north answer small house water red ball team friend letter sky"
)
METRICS = ["bleu", "chrf", "rouge_l", "edit_similarity"]
LEXICAL = ["exact_match", "contains", "regex", "bleu", "chrf", "ter", "rouge1", "rouge2",
           "rouge_l", "rouge_lsum", "edit_similarity"]  # fmt: skip


def pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        reference = [rng.choice(WORDS) for _ in range(rng.randint(5, 25))]
        output = [w if rng.random() > 0.3 else rng.choice(WORDS) for w in reference]
        if rng.random() < 0.3:
            output = output[: rng.randint(1, len(output))]
        out.append((" ".join(output), " ".join(reference)))
    return out


def direct(name: str) -> Callable[[str, str], float]:
    """The library call a user would make, one pair at a time."""
    if name == "bleu":
        import sacrebleu

        return lambda o, r: sacrebleu.sentence_bleu(o, [r]).score
    if name == "chrf":
        import sacrebleu

        return lambda o, r: sacrebleu.sentence_chrf(o, [r]).score
    if name == "rouge_l":
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        return lambda o, r: scorer.score_multi([r], o)["rougeL"].fmeasure
    from rapidfuzz.distance import Levenshtein

    return lambda o, r: Levenshtein.normalized_similarity(o, r)


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = work()
    return time.perf_counter() - start, value


def compare(data: list[tuple[str, str]]) -> None:
    samples = [Sample(str(i), o, (r,)) for i, (o, r) in enumerate(data)]
    for name in METRICS:
        metric = create(name)
        call = direct(name)
        metric.score(samples[:10])  # warm: imports and scorer objects, on both sides
        call(*data[0])
        ours_s, ours = timed(lambda m=metric: m.score(samples))  # type: ignore[misc]
        theirs_s, theirs = timed(lambda c=call: [c(o, r) for o, r in data])  # type: ignore[misc]
        # Fast ones again, alternating, until each side has run about a second: the best time
        # of each (load from other jobs only ever adds time).
        for _ in range(min(50, int(1.0 / max(ours_s, theirs_s, 1e-3)))):
            ours_s = min(ours_s, timed(lambda m=metric: m.score(samples))[0])  # type: ignore[misc]
            theirs_s = min(theirs_s, timed(lambda c=call: [c(o, r) for o, r in data])[0])  # type: ignore[misc]
        values = [split_score(v)[0] for v in ours]
        equal = sum(a == b for a, b in zip(values, theirs, strict=True))
        print(f"  {name:<16} evalkit {ours_s:7.3f} s  direct {theirs_s:7.3f} s  "
              f"ratio {ours_s / theirs_s:6.3f}  equal {equal}/{len(data)}")  # fmt: skip


def semantic(data: list[tuple[str, str]]) -> None:
    from evalkit.cache import MemoryStore
    from evalkit.metrics.semantic import load_embedder

    metric = create("semantic_similarity")
    load_embedder(metric.model.source, None)  # type: ignore[attr-defined]
    metric.use_store(MemoryStore())  # type: ignore[attr-defined]
    samples = [Sample(str(i), o, (r,)) for i, (o, r) in enumerate(data)]
    seconds, _ = timed(lambda: metric.score(samples))
    print(f"  semantic_similarity  {len(data)} pairs in {seconds:.2f} s: "
          f"{len(data) / seconds:,.0f} pairs/s (embeddings not cached)")  # fmt: skip


def memory_child(n: int) -> None:
    data = pairs(n, seed=1)
    samples = [Sample(str(i), o, (r,)) for i, (o, r) in enumerate(data)]
    start = time.perf_counter()
    for name in LEXICAL:
        create(name).score(samples)
    took = time.perf_counter() - start
    print(f"  every lexical metric ({len(LEXICAL)}) over {n:,} examples: peak RSS "
          f"{peak_rss_mb():,.0f} MB (target < 2,048), {took:.0f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--semantic", type=int, default=2_000, help="0 skips it")
    parser.add_argument("--memory", type=int, default=100_000, help="0 skips it")
    parser.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    data = pairs(args.pairs)
    print(f"lexical metrics: {len(data):,} output/reference pairs ({load_average()})")
    compare(data)
    if args.semantic:
        semantic(data[: args.semantic])
    if args.memory:
        command = [sys.executable, __file__, "--memory-child", str(args.memory)]
        print(subprocess.run(command, capture_output=True, text=True, check=True).stdout, end="")


if __name__ == "__main__":
    main()
