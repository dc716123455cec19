"""vLLM against transformers on the capitals suite, and evalkit's own overhead on vLLM.

    .venv/bin/python bench/vllm_throughput.py                       # base only
    .venv/bin/python bench/vllm_throughput.py --variants base,lora,ngram,nf4 --rounds 3

Needs `make vllm` (.venv-vllm). The same command runs on a CUDA machine (`make vllm` then
installs the CUDA `vllm`; transformers runs on cuda). All 175 capitals prompts, greedy, 16 new
tokens, as suites/capitals.yaml. Figures, each a ratio within this run:

- start-up: seconds from launching the server to /health answering, per server;
- per variant and engine, tokens/s of generating every prompt through evalkit's candidates
  (transformers: batches of 16, after loading; vLLM: 16 requests in flight);
- evalkit driving vLLM (``VllmCandidate.generate``) against a minimal client that sends the
  same chat requests straight to the same server from 16 threads (stdlib only), alternating in
  rounds so load drifts hit both alike; the target is >= 0.9x.

Variants: base; lora (golden/adapters/terse, built by `make demo`); ngram (prompt lookup 5);
nf4 (bitsandbytes 4-bit): a variant one engine cannot serve prints why and is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _env  # first: the environment before transformers reads it

REPO = _env.REPO

from evalkit.candidates import make_candidate  # noqa: E402
from evalkit.candidates.base import GenerationRequest  # noqa: E402
from evalkit.candidates.vllm import VllmCandidate, run_servers  # noqa: E402
from evalkit.errors import CandidateError  # noqa: E402
from evalkit.run.prepare import prepare_suite  # noqa: E402
from evalkit.spec import CandidateSpec, GenerationSpec  # noqa: E402

MODEL = "smollm2-135m-instruct"
ADAPTER = REPO / "golden" / "adapters" / "terse"
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "lora": {"adapter": str(ADAPTER)},
    "ngram": {"speculative": {"prompt_lookup": 5, "speedup_sample": 0}},
    "nf4": {"quantization": {"bits": 4, "type": "nf4"}},
}
CONCURRENCY = 16


def timed_generate(
    candidate: Any, requests: list[GenerationRequest], params: GenerationSpec
) -> tuple[float, int]:
    start = time.perf_counter()
    generations = [g for group in candidate.generate(requests, params) for g in group]
    seconds = time.perf_counter() - start
    errors = [g.error for g in generations if g.error]
    if errors:
        raise SystemExit(f"{candidate.name}: {len(errors)} errors, first: {errors[0]}")
    return seconds, sum(g.n_output_tokens for g in generations)


def minimal_client(
    base: str, model: str, requests: list[GenerationRequest], params: GenerationSpec
) -> tuple[float, int]:
    """The same chat requests, straight to the server: no evalkit, no litellm."""

    def one(request: GenerationRequest) -> int:
        body = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
        }
        post = urllib.request.Request(
            f"{base}/chat/completions",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(post, timeout=900) as response:
            return int(json.loads(response.read())["usage"]["completion_tokens"])

    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        tokens = sum(pool.map(one, requests))
    return time.perf_counter() - start, tokens


def run_variant(
    name: str, requests: list[GenerationRequest], params: GenerationSpec, rounds: int
) -> dict[str, Any]:
    row: dict[str, Any] = {"variant": name}
    for engine in ("transformers", "vllm"):
        spec = CandidateSpec(model=MODEL, engine=engine, **VARIANTS[name])
        try:
            candidate = make_candidate(f"{name}-{engine}", spec, REPO)
            candidate.fingerprint()
            if isinstance(candidate, VllmCandidate):
                candidate.server()  # started (and timed) before the clock runs
            else:
                candidate.generate(requests[:1], params).__next__()  # loads the model
            seconds, tokens = timed_generate(candidate, requests, params)
        except CandidateError as exc:
            row[engine] = {"refused": str(exc)}
            print(f"  {name} on {engine}: refused: {exc}")
            continue
        row[engine] = {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}
        print(
            f"  {name} on {engine}: {seconds:.1f} s, {tokens} tokens, {tokens / seconds:.1f} tok/s"
        )
        if isinstance(candidate, VllmCandidate) and name == "base":
            row["overhead"] = overhead(candidate, requests, params, rounds)
        candidate.close()
    if all("seconds" in row.get(e, {}) for e in ("transformers", "vllm")):
        # Wall time of the same prompts: vLLM's token counts include the end-of-sequence token
        # and transformers' do not, so tokens/s would flatter vLLM by about one token a prompt.
        row["vllm_speedup"] = row["transformers"]["seconds"] / row["vllm"]["seconds"]
    return row


def overhead(
    candidate: VllmCandidate, requests: list[GenerationRequest], params: GenerationSpec, rounds: int
) -> dict[str, Any]:
    server = candidate.server()
    times: dict[str, list[float]] = {"evalkit": [], "minimal": []}
    for index in range(rounds):
        order = ["evalkit", "minimal"] if index % 2 == 0 else ["minimal", "evalkit"]
        for who in order:
            if who == "evalkit":
                seconds, _ = timed_generate(candidate, requests, params)
            else:
                seconds, _ = minimal_client(server.base, candidate.served_model, requests, params)
            times[who].append(seconds)
            print(f"    round {index + 1} {who}: {seconds:.1f} s")
    evalkit_s, minimal_s = statistics.median(times["evalkit"]), statistics.median(times["minimal"])
    return {
        "evalkit_s": times["evalkit"],
        "minimal_s": times["minimal"],
        "evalkit_over_minimal_throughput": minimal_s / evalkit_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default="base", help="comma-separated: base,lora,ngram,nf4")
    parser.add_argument("--rounds", type=int, default=2, help="evalkit vs minimal client rounds")
    parser.add_argument("--limit", type=int, help="the first N prompts only (default: all 175)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if "lora" in names and not ADAPTER.is_dir():
        parser.error(
            f"the lora variant needs {ADAPTER}: build it with "
            f"`make {ADAPTER.relative_to(REPO)}/adapter_model.safetensors`"
        )
    prepared = prepare_suite(REPO / "suites" / "capitals.yaml")
    suite = prepared.loaded.spec
    params = suite.generation.model_copy(update={"batch_size": CONCURRENCY})
    requests = prepared.requests[: args.limit] if args.limit else prepared.requests
    specs = {
        n: CandidateSpec(model=MODEL, engine="vllm", **VARIANTS[n]) for n in names if n != "nf4"
    }
    print(
        f"{len(requests)} capitals prompts, greedy, {params.max_new_tokens} new tokens; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    with run_servers(specs, REPO, REPO / "reports" / "vllm") as pool:
        started = time.perf_counter()
        configs = [VllmCandidate(n, s, REPO, pool=pool).plan() for n, s in specs.items()]
        servers = pool.start_all(dict.fromkeys(configs), 900)
        startup = [s.startup_s for s in servers]
        print(
            f"server start-up: {', '.join(f'{s:.0f} s' for s in startup)} "
            f"(all together {time.perf_counter() - started:.0f} s)"
        )
        rows = [run_variant(name, requests, params, args.rounds) for name in names]
    figures = {"load_average": os.getloadavg()[0], "startup_s": startup, "variants": rows}
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
