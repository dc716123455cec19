"""What the fidelity columns (KL divergence, top-1 agreement) cost, as ratios to generation.

    .venv/bin/python bench/fidelity_cost.py [suites/capitals.yaml] [--variant nf4] [--limit N]

For the suite's compare_to candidate (the base) and one variant, each loaded once (not timed),
times back to back on the same examples: greedy generation (no cache), then the fidelity pass.
For the base that pass is its own forward pass plus extracting and storing the top-k log-probs
(what every variant then reads); for the variant it is one forward pass per example and the
comparison with the stored distributions. ``top1_agreement`` after ``kl_divergence`` reuses the
same pass (timed too: it should be ~0). Ratios, not seconds, are the figures to compare across
machines (a busy machine slows both sides alike).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _env  # noqa: F401  (first: the environment before transformers reads it)

from evalkit.cache import MemoryStore, make_key
from evalkit.candidates import make_candidate
from evalkit.metrics import BaseRef, Sample, create
from evalkit.run import prepare_suite

ROOT = Path(__file__).resolve().parent.parent


def timed(label: str, work: Callable[[], Any]) -> float:
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    print(f"{label:<52} {seconds:8.2f} s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("suite", nargs="?", default=str(ROOT / "suites" / "capitals.yaml"))
    parser.add_argument("--variant", default="nf4")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    prepared = prepare_suite(Path(args.suite))
    spec = prepared.loaded.spec
    if spec.compare_to is None:
        raise SystemExit(f"{args.suite} has no compare_to: nothing to measure fidelity against")
    folder = prepared.loaded.path.parent
    requests = prepared.requests[: args.limit]
    examples = {e.id: e for e in prepared.examples}
    samples = [Sample(r.id, "", examples[r.id].references, messages=r.messages) for r in requests]
    kl, top1 = create("kl_divergence"), create("top1_agreement")
    store = MemoryStore()
    kl.use_store(store)  # type: ignore[union-attr]
    print(f"suite {spec.suite}: {len(requests)} examples, base {spec.compare_to}, {args.variant}")
    figures: dict[str, float] = {}
    base_hash = ""
    for name in (spec.compare_to, args.variant):
        cand_spec = spec.candidates[name]
        params = spec.generation.merged(cand_spec.generation)
        candidate = make_candidate(name, cand_spec, folder)
        if name == spec.compare_to:
            base_hash = make_key(**candidate.fingerprint())[:16]
        ref = BaseRef(spec.compare_to, base_hash, lambda: None, is_self=name == spec.compare_to)  # type: ignore[arg-type,return-value]
        try:
            timed(f"{name}: load (not compared)", candidate.loaded)  # type: ignore[attr-defined]
            figures[f"{name}_generate_s"] = timed(
                f"{name}: generate (max_new_tokens {params.max_new_tokens})",
                lambda c=candidate, p=params: [b for b in c.generate(requests, p)],
            )
            figures[f"{name}_kl_s"] = timed(
                f"{name}: kl_divergence",
                lambda c=candidate, r=ref, p=params: kl.score_against(samples, c, r, p),  # type: ignore[union-attr]
            )
            figures[f"{name}_top1_s"] = timed(
                f"{name}: top1_agreement after it",
                lambda c=candidate, r=ref, p=params: top1.score_against(samples, c, r, p),  # type: ignore[union-attr]
            )
        finally:
            candidate.close()
    for name in (spec.compare_to, args.variant):
        ratio = figures[f"{name}_kl_s"] / figures[f"{name}_generate_s"]
        figures[f"{name}_ratio"] = ratio
        print(f"{name}: fidelity pass / generation = {ratio:.3f}")
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
