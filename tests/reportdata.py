"""A realistic RunResult without running any model, for report tests and bench/report_scale.py.

Five candidates as a real run would have them (base; a LoRA adapter that helps; an nf4
quantization that hurts; speculative decoding with identical outputs and a faster TPOT; an API
model with a cost), the metric columns other parts of evalkit write (lexical, semantic,
perplexity, a judge with rationales and missing scores, latency with p50/p95, peak memory),
``describe`` dicts with adapter/quantization/speculative settings, and gate verdicts computed by
the real ``evaluate_gate``. Some golden strings and outputs are hostile HTML on purpose.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pytest

from evalkit.errors import EvalkitError
from evalkit.gates import BaselineScores, evaluate_gate
from evalkit.results import (
    Aggregate,
    CandidateRun,
    ExampleResult,
    RunResult,
    Timings,
)
from evalkit.spec import GateSpec
from evalkit.stats import mean_ci

HOSTILE = [
    "<script>alert('golden')</script>",
    '<img src=x onerror="alert(1)">',
    "</textarea><b>bold?</b>",
    "</script><script>alert(2)</script>",
    "&lt;already escaped&gt; & \u2028 line separator",
]
"""Strings that would execute or break markup if a report pasted them in unescaped."""

CITIES = ["Paris", "Berlin", "Rome", "Madrid", "Tokyo", "Lima", "Oslo", "Cairo", "Quito", "Hanoi"]
WRONG = ["Lyon", "Munich", "Milan", "Seville", "Osaka", "Cusco", "Bergen", "Giza", "Cuenca"]

# name -> (P(correct), extra TPOT ms, output copied from base?, speculative?)
PROFILES = {
    "base": (0.62, 0.0, False),
    "lora": (0.74, 0.4, False),
    "nf4": (0.55, 3.5, False),
    "spec": (0.62, -4.0, True),
    "remote": (0.80, 9.0, False),
}

METRICS = {  # column -> (higher_is_better, signature)
    "exact_match": (True, "normalize:strip"),
    "chrf": (True, "case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0"),
    "semantic_similarity": (True, "all-MiniLM-L6-v2|cosine"),
    "reference_perplexity": (False, "smollm2-135m-instruct|tokens"),
    "judge.correctness": (True, "judge:smollm2-135m-instruct|rubric:correctness|scale:1-5"),
    "latency.ttft_ms": (False, "single request|warmup:2"),
    "latency.tpot_ms": (False, "single request|warmup:2"),
    "latency.e2e_ms": (False, "single request|warmup:2"),
    "latency.tokens_per_s": (True, "single request|warmup:2"),
    "memory.peak_mb": (False, "torch.cuda.max_memory_allocated or RSS"),
}

GATES = {
    "exact_match": GateSpec(metric="exact_match", min=0.2, max_drop=0.03),
    "judge": GateSpec(metric="judge.correctness", max_drop=0.25),
    "tpot": GateSpec(metric="latency.tpot_ms", max_increase="15%"),
}


def require_chromium() -> None:
    """Browser tests fail (never skip) without Chromium, saying how to install it."""
    from evalkit.report.browser import chromium_path

    try:
        chromium_path()
        return
    except EvalkitError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


@dataclass(frozen=True)
class Golden:
    id: str
    question: str
    reference: str


def golden_examples(n: int, rng: np.random.Generator) -> list[Golden]:
    out = []
    for i in range(n):
        city = CITIES[i % len(CITIES)]
        question = f"Q{i}: which city is meant by clue #{int(rng.integers(1000))}?"
        if i % 97 == 3:  # a hostile golden example now and then
            question += " " + HOSTILE[(i // 97) % len(HOSTILE)]
        out.append(Golden(f"ex-{i:05d}", question, city))
    return out


def _output(g: Golden, correct: bool, rng: np.random.Generator, i: int) -> str:
    if i % 89 == 5:  # hostile model output
        return f"{g.reference} {HOSTILE[(i // 89) % len(HOSTILE)]}"
    if correct:
        return g.reference if rng.random() < 0.5 else f"The answer is {g.reference}."
    return f"I think it is {WRONG[int(rng.integers(len(WRONG)))]}, near the coast."


def _scores(g: Golden, output: str, correct: bool, rng: np.random.Generator) -> dict[str, float]:
    return {
        "exact_match": float(output.strip() == g.reference),
        "chrf": float(np.clip((70 if correct else 15) + rng.normal(0, 12), 0, 100)),
        "semantic_similarity": float(
            np.clip((0.85 if correct else 0.4) + rng.normal(0, 0.08), 0, 1)
        ),
        "reference_perplexity": float(np.exp(rng.normal(2.2, 0.4))),
        "judge.correctness": float(
            np.clip(round((4.2 if correct else 1.8) + rng.normal(0, 0.7)), 1, 5)
        ),
    }


def _latency(tpot_extra: float, n_tokens: int, rng: np.random.Generator) -> dict[str, float]:
    ttft = float(rng.gamma(9.0, 4.0))
    tpot = float(max(1.0, 18.0 + tpot_extra + rng.normal(0, 1.5)))
    e2e = ttft + tpot * n_tokens
    return {
        "latency.ttft_ms": ttft,
        "latency.tpot_ms": tpot,
        "latency.e2e_ms": e2e,
        "latency.tokens_per_s": 1000.0 * n_tokens / e2e,
    }


def _candidate_examples(
    name: str, goldens: list[Golden], base: list[ExampleResult] | None, rng: np.random.Generator
) -> list[ExampleResult]:
    p_correct, tpot_extra, copy_base = PROFILES[name]
    examples = []
    for i, g in enumerate(goldens):
        correct = bool(rng.random() < p_correct)
        output = base[i].output if copy_base and base else _output(g, correct, rng, i)
        error = None
        if name == "remote" and i % 53 == 7:
            output, error = None, "APIError: 503 Service Unavailable after 3 retries"
        n_tokens = int(rng.integers(2, 14))
        scores: dict[str, float | None] = {}
        details: dict[str, dict] = {}
        if output is not None:
            scores = {**_scores(g, output, correct, rng), **_latency(tpot_extra, n_tokens, rng)}
            scores["memory.peak_mb"] = None
            verdict = "matches" if correct else "does not match"
            details["judge.correctness"] = {
                "rationale": f"The answer {verdict} the reference {g.reference!r}.",
                "samples": [scores["judge.correctness"]],
            }
            if i % 41 == 11:  # the judge could not parse its own answer
                scores["judge.correctness"] = None
                details["judge.correctness"] = {"error": "judge reply had no score: 'Maybe?'"}
        examples.append(
            ExampleResult(
                id=g.id,
                references=[g.reference],
                messages=[
                    {"role": "system", "content": "Answer with the city only."},
                    {"role": "user", "content": g.question},
                ],
                prompt=f"<|im_start|>user\n{g.question}<|im_end|>\n<|im_start|>assistant\n",
                output=output,
                error=error,
                scores=scores,
                details=details,
                n_prompt_tokens=20 + len(g.question) // 4,
                n_output_tokens=n_tokens,
                seconds=n_tokens * 0.02,
                cached=i % 3 == 0,
            )
        )
    return examples


def _aggregates(examples: list[ExampleResult], peak_mb: float, n_boot: int) -> dict[str, Aggregate]:
    out = {}
    for column, (hib, signature) in METRICS.items():
        values = [e.scores.get(column) for e in examples]
        present = [v for v in values if v is not None]
        if column == "memory.peak_mb":  # one run-level figure, no per-example value
            out[column] = Aggregate(
                metric=column,
                mean=peak_mb,
                n=1,
                higher_is_better=hib,
                signature=signature,
                version="1",
                extra={"weights_mb": peak_mb * 0.8},
            )
            continue
        est = mean_ci(present, n_boot=n_boot)
        extra: dict[str, float | None] = {}
        corpus = None
        if column.startswith("latency."):
            extra = {
                "p50": float(np.percentile(present, 50)),
                "p95": float(np.percentile(present, 95)),
            }
        if column == "reference_perplexity":
            corpus = float(np.exp(np.mean(np.log(present))))
            extra = {"word_perplexity": corpus * 1.9, "byte_perplexity": 1.7, "bits_per_byte": 0.77}
        if column == "chrf":
            corpus = est.mean - 1.0
        out[column] = Aggregate(
            metric=column,
            mean=est.mean,
            ci_low=est.ci_low,
            ci_high=est.ci_high,
            n=est.n,
            n_missing=len(values) - len(present),
            corpus=corpus,
            extra=extra,
            higher_is_better=hib,
            signature=signature,
            version="1",
        )
    return out


def _describe(name: str) -> dict:
    describe: dict = {
        "model": "smollm2-135m-instruct",
        "device": "cpu",
        "dtype": "float32",
        "load_seconds": 1.4,
        "n_parameters": 134_515_008,
        "weights_mb": 513.1,
    }
    if name == "lora":
        describe["adapter"] = {
            "path": "golden/adapters/capitals",
            "hash": "9f2c01ab77e4d1c3",
            "r": 8,
            "alpha": 16,
            "target_modules": ["q_proj", "v_proj"],
            "merged": False,
        }
    if name == "nf4":
        describe["quantization"] = {
            "bits": 4,
            "type": "nf4",
            "double_quant": True,
            "compute_dtype": "float32",
        }
        describe["weights_mb"] = 167.4
    if name == "spec":
        describe["speculative"] = {
            "method": "prompt_lookup",
            "num_assistant_tokens": 10,
            "acceptance_rate": 0.41,
            "proposed": 5230,
            "accepted": 2144,
            "speedup": 1.18,
        }
    if name == "remote":
        describe = {
            "model": "openai/gpt-4o-mini",
            "api_base": "http://127.0.0.1:8011/v1",
            "cost_usd": 0.0123,
            "n_requests": 512,
        }
    return describe


def make_run(
    n_examples: int = 60,
    candidates: tuple[str, ...] = tuple(PROFILES),
    *,
    suite: str = "qa",
    seed: int = 0,
    n_boot: int = 2000,
) -> RunResult:
    rng = np.random.default_rng(seed)
    goldens = golden_examples(n_examples, rng)
    runs: dict[str, CandidateRun] = {}
    for name in candidates:
        base = runs["base"].examples if "base" in runs else None
        examples = _candidate_examples(name, goldens, base, rng)
        peak = {"nf4": 310.0, "remote": 0.0}.get(name, 720.0) + float(rng.normal(0, 5))
        fingerprint = {
            "kind": "hf",
            "model": "smollm2-135m-instruct",
            "files": f"{seed:064x}",
            "candidate": name,
        }
        runs[name] = CandidateRun(
            name=name,
            spec={"model": _describe(name)["model"]},
            fingerprint=fingerprint,
            fingerprint_hash=hashlib.sha256(f"{name}{seed}".encode()).hexdigest()[:16],
            generation={"max_new_tokens": 16, "temperature": 0.0, "seed": seed, "stop": []},
            describe=_describe(name),
            examples=examples,
            aggregates=_aggregates(examples, peak, n_boot),
            n_generated=sum(not e.cached for e in examples),
            n_cached=sum(e.cached for e in examples),
            n_errors=sum(e.error is not None for e in examples),
            timings=Timings(fingerprint_s=0.4, generate_s=12.5, score_s=3.1, total_s=16.0),
        )
    gates = []
    for run in runs.values():
        for gate_name, gate in GATES.items():
            baseline = None
            if gate.is_regression:
                # base is gated against its accepted baseline (here: the same scores)
                label = (
                    "accepted:golden/baselines/qa/base.json"
                    if run.name == "base"
                    else "candidate:base"
                )
                base = runs["base"]
                baseline = BaselineScores(
                    label,
                    {e.id: e.scores.get(gate.metric) for e in base.examples},
                    {e.id: e.output for e in base.examples},
                )
            gates.append(evaluate_gate(suite, gate_name, gate, run, baseline, seed=seed))
    return RunResult(
        suite=suite,
        suite_path=f"suites/{suite}.yaml",
        spec_hash="0123456789abcdef",
        spec={"suite": suite, "compare_to": "base"},
        dataset_path=f"golden/{suite}.jsonl",
        dataset_hash="fedcba9876543210",
        n_examples=n_examples,
        created_at="2026-11-24T08:00:00+00:00",
        evalkit_version="0.1.0",
        versions={"python": "3.11.7", "torch": "2.13.0+cpu", "transformers": "5.23.0"},
        compare_to="base",
        candidates=runs,
        gates=gates,
        cache={
            "hits": {"generation": n_examples, "score": 4 * n_examples},
            "misses": {"generation": 2 * n_examples},
        },
        timings=Timings(total_s=80.0),
    )
