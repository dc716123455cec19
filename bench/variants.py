"""Speed and memory of SmolLM2-135M-Instruct variants, as ratios to the base of the same run.

    .venv/bin/python bench/variants.py                     # CPU, all variants
    .venv/bin/python bench/variants.py --device cuda --sample 32 --rounds 3

Variants: base (float32 on CPU, bfloat16 on CUDA), int8 and nf4 (bitsandbytes; skipped with a
note when this checkout's HFCandidate has no quantization support), prompt lookup, and the draft
model built from SmolLM2's first layers. The requests are the demo suites' own (capitals and
units), half from each, chosen by id hash like the latency metrics.

Speed: every variant is loaded, then measured in rounds, round-robin, so drift in machine load
hits all variants alike. Per round and variant: TTFT/TPOT/end-to-end of single requests (the
latency metrics' probe, ``warmup`` untimed first) and tokens/s of one batched ``generate`` over
the sample (speculative variants run one request at a time). Medians over all rounds.

Memory: each variant alone (the others closed): the process's peak RSS on CPU, reset through
/proc/self/clear_refs, or CUDA peak allocated, during one latency measurement, as the
``memory.peak_mb`` metric reports it; also the peak above the idle process before loading.

Speculative variants also report acceptance and their own speed-up measurement (plain and
speculative target alternating on the same requests, as run.json's ``speculative.speedup``).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import _env  # first: the environment before transformers reads it

REPO = _env.REPO

from evalkit.candidates.base import GenerationRequest  # noqa: E402
from evalkit.candidates.hf import HFCandidate  # noqa: E402
from evalkit.candidates.models import DRAFT_ALIAS, EMBEDDED_NAME  # noqa: E402
from evalkit.candidates.timing import MemoryWindow, proc_status_mb, timing_sample  # noqa: E402
from evalkit.run import prepare_suite  # noqa: E402
from evalkit.spec import CandidateSpec, GenerationSpec  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "int8": {"quantization": {"bits": 8}},
    "nf4": {"quantization": {"bits": 4, "type": "nf4"}},
    "lookup": {"speculative": {"prompt_lookup": 10}},
    "draft": {"speculative": {"draft": DRAFT_ALIAS, "num_assistant_tokens": 4}},
}


@dataclass
class Figures:
    ttft_ms: list[float] = field(default_factory=list)
    tpot_ms: list[float] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)
    single_tokens: int = 0
    single_s: float = 0.0
    batch_tokens: int = 0
    batch_s: float = 0.0
    peak_mb: float | None = None
    above_idle_mb: float | None = None
    notes: list[str] = field(default_factory=list)

    def median(self, name: str) -> float | None:
        values = getattr(self, name)
        return statistics.median(values) if values else None

    @property
    def batched_tps(self) -> float | None:
        return self.batch_tokens / self.batch_s if self.batch_s else None

    @property
    def single_tps(self) -> float | None:
        return self.single_tokens / self.single_s if self.single_s else None


def requests(n: int) -> list[GenerationRequest]:
    suites = [prepare_suite(REPO / "suites" / f"{name}.yaml") for name in ("capitals", "units")]
    half = [
        timing_sample(suite.requests, n - n // 2 if i == 0 else n // 2)
        for i, suite in enumerate(suites)
    ]
    return [request for part in half for request in part]


def make(name: str, device: str | None) -> HFCandidate | str:
    """The candidate, or why this checkout cannot build it."""
    spec = CandidateSpec(model=EMBEDDED_NAME, device=device, **VARIANTS[name])
    candidate = HFCandidate(name, spec, REPO)
    if spec.quantization is not None and "quantization" not in candidate.fingerprint():
        return "skipped: this checkout's HFCandidate has no quantization support (issue-variants)"
    return candidate


def time_round(
    candidate: HFCandidate,
    sample: list[GenerationRequest],
    params: GenerationSpec,
    warmup: int,
    figures: Figures,
) -> None:
    for timed in candidate.measure_latency(sample, params, warmup=warmup):
        if timed.error is not None or timed.ttft_s is None:
            figures.notes.append(f"{timed.id}: {timed.error or 'no token'}")
            continue
        figures.ttft_ms.append(timed.ttft_s * 1000)
        figures.e2e_ms.append(timed.total_s * 1000)
        if timed.n_output_tokens > 1:
            figures.tpot_ms.append(
                (timed.total_s - timed.ttft_s) / (timed.n_output_tokens - 1) * 1000
            )
        figures.single_tokens += timed.n_output_tokens
        figures.single_s += timed.total_s
    start = time.perf_counter()
    generations = [g for batch in candidate.generate(sample, params) for g in batch]
    figures.batch_s += time.perf_counter() - start
    figures.batch_tokens += sum(g.n_output_tokens for g in generations if g.error is None)


def memory(
    name: str,
    device: str | None,
    sample: list[GenerationRequest],
    params: GenerationSpec,
    warmup: int,
) -> tuple[float, float, float]:
    """(peak MB as memory.peak_mb reports it, peak above the idle process, RSS after close)."""
    gc.collect()
    idle = proc_status_mb("VmRSS") or 0.0
    candidate = make(name, device)
    assert isinstance(candidate, HFCandidate)
    candidate.loaded()
    window = MemoryWindow(candidate.device)
    window.start()
    time_round(candidate, sample, params, warmup, Figures())
    peak = window.read()
    candidate.close()
    gc.collect()
    above = peak.peak_mb - idle if peak.kind == "process_peak_rss" else peak.peak_mb
    return peak.peak_mb, above, proc_status_mb("VmRSS") or 0.0


def ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value is not None and base else "-"


def fmt(value: float | None, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if value is not None else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=8, help="requests per round (default 8)")
    parser.add_argument("--rounds", type=int, default=2, help="round-robin rounds (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed requests per round")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    args = parser.parse_args()

    import torch

    params = GenerationSpec(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    sample = requests(args.sample)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    print(
        f"{len(sample)} requests (capitals + units), max_new_tokens {args.max_new_tokens}, "
        f"{args.rounds} rounds, batch_size {args.batch_size}"
    )

    candidates: dict[str, HFCandidate] = {}
    figures = {name: Figures() for name in names}
    for name in names:
        made = make(name, args.device)
        if isinstance(made, str):
            figures[name].notes.append(made)
            continue
        candidates[name] = made

    for name in candidates:
        print(f"memory: {name} ...", flush=True)
        peak, above, after = memory(name, args.device, sample, params, args.warmup)
        figures[name].peak_mb, figures[name].above_idle_mb = peak, above
        print(
            f"  peak {peak:.0f} MB, {above:.0f} MB above the idle process, "
            f"RSS after close {after:.0f} MB"
        )

    started = time.perf_counter()
    for candidate in candidates.values():
        candidate.loaded()
    for round_index in range(args.rounds):
        for name, candidate in candidates.items():
            print(f"speed: round {round_index + 1}, {name} ...", flush=True)
            time_round(candidate, sample, params, args.warmup, figures[name])
    speedups = {}
    for name, candidate in candidates.items():
        if candidate.speculation is not None:
            candidate.speculation.measure_speedup(sample, params, n=len(sample))
            speedups[name] = candidate.describe()["speculative"]
    print(
        f"speed phase {time.perf_counter() - started:.0f} s, "
        f"load average {os.getloadavg()[0]:.1f} at end\n"
    )
    report(names, figures, speedups)
    for candidate in candidates.values():
        candidate.close()


def report(
    names: list[str], figures: dict[str, Figures], speedups: dict[str, dict[str, Any]]
) -> None:
    base = figures.get("base")
    header = (
        "variant",
        "TTFT ms",
        "TPOT ms",
        "e2e ms",
        "tok/s batched",
        "tok/s single",
        "peak MB",
        "above idle MB",
    )
    rows = [header]
    for name in names:
        f = figures[name]
        rows.append(
            (
                name,
                fmt(f.median("ttft_ms")),
                fmt(f.median("tpot_ms")),
                fmt(f.median("e2e_ms"), 0),
                fmt(f.batched_tps),
                fmt(f.single_tps),
                fmt(f.peak_mb, 0),
                fmt(f.above_idle_mb, 0),
            )
        )
    print(table(rows))
    if base is not None:
        print("\nratios to base (same run):")
        rows = [
            (
                "variant",
                "TTFT",
                "TPOT",
                "e2e",
                "tok/s batched",
                "tok/s single",
                "peak MB",
                "above idle",
            )
        ]
        for name in names:
            f = figures[name]
            rows.append(
                (
                    name,
                    ratio(f.median("ttft_ms"), base.median("ttft_ms")),
                    ratio(f.median("tpot_ms"), base.median("tpot_ms")),
                    ratio(f.median("e2e_ms"), base.median("e2e_ms")),
                    ratio(f.batched_tps, base.batched_tps),
                    ratio(f.single_tps, base.single_tps),
                    ratio(f.peak_mb, base.peak_mb),
                    ratio(f.above_idle_mb, base.above_idle_mb),
                )
            )
        print(table(rows))
    for name, facts in speedups.items():
        rate = facts.get("acceptance_rate")
        print(
            f"\n{name}: acceptance {fmt(rate, 3) if rate is not None else '-'} "
            f"({facts['accepted']}/{facts['proposed']} draft tokens), speed-up vs the same target "
            f"without speculation {facts['speedup']:.2f}x "
            f"(alternating, {facts['timed_requests']} requests: "
            f"{facts['plain_s']:.1f} s plain, {facts['speculative_s']:.1f} s speculative)"
        )
    for name in names:
        for note in figures[name].notes:
            print(f"{name}: {note}")


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


if __name__ == "__main__":
    main()
