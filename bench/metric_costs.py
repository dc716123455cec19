"""What the model-based metrics cost, as ratios to generating the same suite in the same process.

    .venv/bin/python bench/metric_costs.py [suites/units.yaml] [--limit N]

Loads the suite's first candidate once (not timed), then times, back to back on the same
examples: greedy generation (no cache), ``reference_perplexity`` (one forward pass per batch,
no generation), ``semantic_similarity`` on the generated outputs with the embedding model
already loaded (cold store, then warm store), and ``perplexity`` over golden/corpus.jsonl.
Ratios, not seconds, are the figures to compare across machines (a busy machine slows all of
them alike).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _env  # noqa: F401  (first: the environment before transformers reads it)

from evalkit.cache import MemoryStore
from evalkit.candidates import make_candidate
from evalkit.golden import load_golden
from evalkit.metrics import Sample, create
from evalkit.metrics.semantic import load_embedder
from evalkit.run import prepare_suite

ROOT = Path(__file__).resolve().parent.parent


def timed(label: str, work: object) -> float:
    start = time.perf_counter()
    work()  # type: ignore[operator]
    seconds = time.perf_counter() - start
    print(f"{label:<44} {seconds:8.2f} s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("suite", nargs="?", default=str(ROOT / "suites" / "units.yaml"))
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    prepared = prepare_suite(Path(args.suite))
    spec = prepared.loaded.spec
    name, cand_spec = next(iter(spec.candidates.items()))
    params = spec.generation.merged(cand_spec.generation)
    candidate = make_candidate(name, cand_spec, prepared.loaded.path.parent)
    requests = prepared.requests[: args.limit]
    examples = {e.id: e for e in prepared.examples}
    print(f"suite {spec.suite}: {len(requests)} examples, candidate {name} ({cand_spec.model})")
    timed("load the candidate (not compared)", candidate.loaded)  # type: ignore[attr-defined]
    outputs: dict[str, str] = {}

    def generate() -> None:
        for batch in candidate.generate(requests, params):
            outputs.update((g.id, g.output) for g in batch)

    generation = timed(f"generate (max_new_tokens {params.max_new_tokens})", generate)
    samples = [
        Sample(r.id, outputs[r.id], examples[r.id].references, messages=r.messages)
        for r in requests
    ]
    ppl = create("reference_perplexity")
    reference = timed(
        "reference_perplexity",
        lambda: ppl.score_candidate(samples, candidate, params),  # type: ignore[arg-type]
    )
    semantic = create("semantic_similarity")
    timed("load MiniLM (not compared)", lambda: load_embedder(semantic.model.source, None))
    semantic.use_store(MemoryStore())
    cold = timed("semantic_similarity, embeddings not cached", lambda: semantic.score(samples))
    warm = timed("semantic_similarity, embeddings cached", lambda: semantic.score(samples))
    corpus = [
        Sample(e.id, "", (), fields=e.fields) for e in load_golden(ROOT / "golden" / "corpus.jsonl")
    ]
    rolling = create("perplexity")
    corpus_s = timed(
        f"perplexity over golden/corpus.jsonl ({len(corpus)} texts)",
        lambda: rolling.score_candidate(corpus, candidate, params),  # type: ignore[arg-type]
    )
    print(f"reference_perplexity / generation:   {reference / generation:.3f}")
    print(f"semantic (cold) / generation:        {cold / generation:.3f}")
    print(f"semantic (cached) / semantic (cold): {warm / cold:.3f}")
    print(f"corpus perplexity / generation:      {corpus_s / generation:.3f}")
    candidate.close()


if __name__ == "__main__":
    main()
