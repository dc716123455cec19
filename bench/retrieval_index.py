"""Dense index choice for RAG candidates, measured at 100k chunks: numpy brute force (exact)
against faiss (exact flat and HNSW) and usearch (HNSW), plus bm25s at the same size.

What an evaluation run does with a dense index: build it once per corpus version (cached on
disk), then search a few hundred to a few thousand golden queries in one batch. So the figures
that matter are build time plus one batched search, and whether results are exact (an
approximate index can change which chunks a candidate sees between library versions).

Vectors are random unit vectors of MiniLM's 384 dimensions (embedding 100k real chunks takes
about half an hour on 2 CPU cores, and index speed does not depend on where vectors come from;
HNSW recall on real embeddings is usually higher than on random vectors). The BM25 corpus is
synthetic text drawn from a Zipf vocabulary.

faiss-cpu and usearch are not evalkit dependencies; install them next to the venv to compare:
    pip install --target /tmp/bench_libs faiss-cpu==1.15.1 usearch==2.26.6
    BENCH_LIBS=/tmp/bench_libs .venv/bin/python bench/retrieval_index.py --chunks 100000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

if os.environ.get("BENCH_LIBS"):
    sys.path.append(os.environ["BENCH_LIBS"])  # appended: the venv's numpy stays first

from evalkit.retrieval.index import BM25Index, top_k


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)])
    )


def bench_numpy(chunks: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, dict]:
    def search() -> np.ndarray:
        return np.array([[i for i, _ in top_k(row, k)] for row in queries @ chunks.T])

    found, seconds = timed(search)
    return found, {"build_s": 0.0, "search_s": seconds, "recall": 1.0}


def bench_faiss(chunks: np.ndarray, queries: np.ndarray, k: int, exact: np.ndarray) -> dict:
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    rows = {}
    for label, make in (
        ("faiss flat (exact)", lambda: faiss.IndexFlatIP(chunks.shape[1])),
        (
            "faiss HNSW M=32",
            lambda: faiss.IndexHNSWFlat(chunks.shape[1], 32, faiss.METRIC_INNER_PRODUCT),
        ),
    ):
        index = make()
        _, build = timed(lambda index=index: index.add(chunks))
        (_, found), search = timed(lambda index=index: index.search(queries, k))
        rows[label] = {"build_s": build, "search_s": search, "recall": recall(found, exact)}
    return rows


def bench_usearch(chunks: np.ndarray, queries: np.ndarray, k: int, exact: np.ndarray) -> dict:
    from usearch.index import Index

    index = Index(ndim=chunks.shape[1], metric="ip", dtype="f32")
    keys = np.arange(len(chunks))
    _, build = timed(lambda: index.add(keys, chunks))
    matches, search = timed(lambda: index.search(queries, k))
    return {
        "usearch HNSW": {
            "build_s": build,
            "search_s": search,
            "recall": recall(matches.keys, exact),
        }
    }


def bench_bm25(n: int, n_queries: int, k: int) -> dict:
    rng = np.random.default_rng(1)
    vocab = np.array([f"w{i}" for i in range(50_000)])
    ranks = np.minimum(rng.zipf(1.2, size=(n, 120)), len(vocab)) - 1
    texts = [" ".join(vocab[row]) for row in ranks]
    queries = [" ".join(vocab[rng.integers(0, 5_000, size=6)]) for _ in range(n_queries)]
    index, build = timed(lambda: BM25Index.build(texts))
    _, search = timed(lambda: index.rank(queries, k))
    return {"bm25s (ours, exact top-k)": {"build_s": build, "search_s": search, "recall": 1.0}}


def report(label: str, row: dict, n_queries: int) -> None:
    per_query = 1000 * row["search_s"] / n_queries
    figures = f"{row['build_s']:9.2f} {row['search_s']:9.3f} {per_query:9.2f} {row['recall']:7.3f}"
    print(f"{label:30s} {figures}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    chunks = unit_vectors(args.chunks, args.dim, 0)
    queries = unit_vectors(args.queries, args.dim, 1)
    print(
        f"{args.chunks} chunks x {args.dim} dims, {args.queries} queries, top {args.k}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'index':30s} {'build s':>9s} {'search s':>9s} {'ms/query':>9s} {'recall':>7s}")
    exact, row = bench_numpy(chunks, queries, args.k)
    report("numpy brute force (exact)", row, args.queries)
    for name, bench in (("faiss", bench_faiss), ("usearch", bench_usearch)):
        try:
            rows = bench(chunks, queries, args.k, exact)
        except ImportError:
            print(f"{name}: not installed (see this script's docstring)", flush=True)
            continue
        for label, row in rows.items():
            report(label, row, args.queries)
    for label, row in bench_bm25(args.chunks, args.queries, args.k).items():
        report(label, row, args.queries)


if __name__ == "__main__":
    main()
