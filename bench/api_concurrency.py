"""Throughput of an API candidate against a local OpenAI-compatible server, by concurrency.

The server answers each request after a fixed delay (a stand-in for a remote model's latency),
so the wall time of N requests should fall about in proportion to ``api.concurrency`` until
litellm's own per-request overhead dominates. Prints wall times and the speed-up over
concurrency 1, measured in the same run; nothing leaves 127.0.0.1.

    .venv/bin/python bench/api_concurrency.py [--requests 64] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from openai_server import OpenAIServer

from evalkit.candidates.api import ApiCandidate
from evalkit.candidates.base import GenerationRequest, Message
from evalkit.spec import CandidateSpec, GenerationSpec


def wall_time(server: OpenAIServer, n: int, concurrency: int) -> float:
    spec = CandidateSpec(model="bench", api={"base": server.base, "concurrency": concurrency})
    candidate = ApiCandidate("bench", spec)
    requests = [
        GenerationRequest(id=f"r{i}", messages=(Message("user", f"request {i}"),)) for i in range(n)
    ]
    started = time.perf_counter()
    done = sum(len(batch) for batch in candidate.generate(requests, GenerationSpec()))
    elapsed = time.perf_counter() - started
    assert done == n and candidate.stats.errors == 0
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.05, help="server delay per request (s)")
    args = parser.parse_args()
    with OpenAIServer() as server:
        wall_time(server, 4, 4)  # warm-up: litellm import and client setup
        server.delay_s = args.delay
        base = wall_time(server, args.requests, 1)
        print(f"{args.requests} requests, server delay {args.delay * 1000:.0f} ms each")
        print(f"concurrency  1: {base:6.2f} s  (1.0x)")
        for concurrency in (4, 8, 32):
            server.reset()
            elapsed = wall_time(server, args.requests, concurrency)
            print(
                f"concurrency {concurrency:2d}: {elapsed:6.2f} s  ({base / elapsed:.1f}x, "
                f"max in flight {server.max_in_flight})"
            )
        server.delay_s = 0.0
        elapsed = wall_time(server, args.requests, 8)
        print(f"no server delay, concurrency 8: {args.requests / elapsed:.0f} requests/s")


if __name__ == "__main__":
    main()
