"""semantic_similarity against sentence-transformers called directly (util.cos_sim), and proof
that each text is embedded once across candidates and runs (encode calls are counted)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from suitefiles import write_jsonl, write_suite

from evalkit.cache import Cache, MemoryStore
from evalkit.errors import SpecError
from evalkit.metrics import Sample, create, split_score
from evalkit.metrics.semantic import default_model_folder, load_embedder
from evalkit.run import RunOptions, prepare_suite, run_suite
from evalkit.testing import score

PAIRS = [
    ("Paris", ("Paris",)),
    ("The capital of France is Paris.", ("Paris",)),
    ("I think it is Lyon", ("Paris",)),
    ("Brasilia", ("Brasília", "Brasilia")),
    ("It is St. John's.", ("St. John's", "Saint John's")),
    ("", ("Tokyo",)),
]


@pytest.fixture(scope="module")
def direct() -> Any:
    """An independent SentenceTransformer on the same folder (not the metric's shared one)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(default_model_folder()), device="cpu")


def cos_sim(model: Any, a: str, b: str) -> float:
    from sentence_transformers import util

    embeddings = model.encode([a, b], convert_to_tensor=True)
    return float(util.cos_sim(embeddings[0], embeddings[1]))


@pytest.fixture
def encoded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """Every batch of texts the metric's shared model is asked to encode."""
    model = load_embedder(str(default_model_folder()), None)
    calls: list[list[str]] = []
    original = model.encode

    def counting(texts: Sequence[str], *args: Any, **kwargs: Any) -> Any:
        calls.append(list(texts))
        return original(texts, *args, **kwargs)

    monkeypatch.setattr(model, "encode", counting)
    yield calls


def samples(pairs: Sequence[tuple[str, tuple[str, ...]]]) -> list[Sample]:
    return [Sample(str(i), output, refs) for i, (output, refs) in enumerate(pairs)]


def test_values_equal_sentence_transformers_cos_sim(direct: Any) -> None:
    for mode in ("max", "mean", "first"):
        metric = create("semantic_similarity", {"references": mode})
        metric.use_store(MemoryStore())
        for (output, refs), raw in zip(PAIRS, metric.score(samples(PAIRS)), strict=True):
            value, detail = split_score(raw)
            sims = [cos_sim(direct, output, ref) for ref in refs]
            expected = {"max": max(sims), "mean": sum(sims) / len(sims), "first": sims[0]}[mode]
            assert value == pytest.approx(expected, abs=1e-5)
            if len(refs) > 1 and mode != "first":
                assert detail["similarities"] == pytest.approx(sims, abs=1e-5)
    # Sanity of the model itself: the answer is closer to the reference than a wrong city.
    assert cos_sim(direct, "Paris", "Paris") == pytest.approx(1.0, abs=1e-5)
    assert cos_sim(direct, "The capital is Paris.", "Paris") > cos_sim(direct, "Lyon", "Paris")


def test_plain_python_route_equals_direct(direct: Any) -> None:
    value = score("semantic_similarity", "It is Bogota", ["Bogotá", "Bogota"])
    expected = max(cos_sim(direct, "It is Bogota", r) for r in ("Bogotá", "Bogota"))
    assert value == pytest.approx(expected, abs=1e-5)


def test_each_text_is_encoded_once_per_store(encoded: list[list[str]]) -> None:
    metric = create("semantic_similarity")
    metric.use_store(MemoryStore())
    metric.score([Sample("a", "Paris", ("Paris",)), Sample("b", "Rome!", ("Rome",))])
    assert encoded == [["Paris", "Rome!", "Rome"]]  # one batch, "Paris" once
    metric.score([Sample("a", "It is Paris", ("Paris",)), Sample("b", "Rome!", ("Rome",))])
    assert encoded[1:] == [["It is Paris"]]  # another candidate: only its new output


def replay_project(root: Path) -> Path:
    golden = [
        {"id": "fr", "country": "France", "reference": "Paris"},
        {"id": "br", "country": "Brazil", "reference": ["Brasília", "Brasilia"]},
        {"id": "jp", "country": "Japan", "reference": "Tokyo"},
    ]
    write_jsonl(root / "golden.jsonl", golden)
    outputs = {
        "base": ["Paris", "Brasilia", "Kyoto"],
        "new": ["Paris is the capital.", "Brasilia", "Tokyo"],
    }
    candidates = {}
    for name, texts in outputs.items():
        rows = [{"id": g["id"], "output": t} for g, t in zip(golden, texts, strict=True)]
        write_jsonl(root / f"{name}.jsonl", rows)
        candidates[name] = {"replay": f"{name}.jsonl"}
    spec = {
        "suite": "semantic",
        "dataset": "golden.jsonl",
        "prompt": "Capital of {{ country }}?",
        "candidates": candidates,
        "metrics": ["semantic_similarity"],
        "gates": {"semantic_similarity": {"min": 0.5}},
        "compare_to": "base",
    }
    return write_suite(root / "suite.yaml", spec)


def test_suite_embeds_references_once_across_candidates_and_runs(
    tmp_path: Path, encoded: list[list[str]], direct: Any
) -> None:
    path = replay_project(tmp_path)
    cache = Cache(tmp_path / "cache.sqlite")
    options = RunOptions(report_dir=tmp_path / "reports", cache=cache, progress=False)
    result = run_suite(prepare_suite(path), options)
    texts = [t for batch in encoded for t in batch]
    # base: its outputs and every reference; new: only its outputs not seen before.
    assert texts == ["Paris", "Brasilia", "Brasília", "Kyoto", "Tokyo", "Paris is the capital."]
    assert result.cache["misses"]["embedding"] == 6
    new = {e.id: e.scores["semantic_similarity"] for e in result.candidates["new"].examples}
    assert new["fr"] == pytest.approx(cos_sim(direct, "Paris is the capital.", "Paris"), abs=1e-5)
    assert new["jp"] == pytest.approx(1.0, abs=1e-5)
    assert [v.status for v in result.gates] == ["passed", "passed"]
    # A second run: scores come from the cache, nothing is embedded.
    encoded.clear()
    again = run_suite(prepare_suite(path), options)
    assert encoded == [] and "embedding" not in again.cache["misses"]
    # Another setting misses the score cache but finds every embedding.
    path.write_text(
        path.read_text().replace(
            "- semantic_similarity", "- {semantic_similarity: {references: mean}}"
        )
    )
    third = run_suite(prepare_suite(path), options)
    assert encoded == []
    # base: 5 distinct texts; new: 3 (its "br" sample equals base's, a score cache hit)
    assert third.cache["hits"]["embedding"] == 8
    assert (
        third.candidates["new"]
        .aggregates["semantic_similarity"]
        .signature.startswith("model:all-MiniLM-L6-v2|fp:")
    )


def test_bad_options_fail_when_the_suite_is_read(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"embedding model folder .* does not exist"):
        create("semantic_similarity", {"model": str(tmp_path / "missing")})
    with pytest.raises(SpecError, match="references must be one of max, mean, first"):
        create("semantic_similarity", {"references": "min"})
    with pytest.raises(SpecError, match=r"unknown option 'modle'\. Did you mean 'model'"):
        create("semantic_similarity", {"modle": "x"})


def test_building_the_metric_imports_no_model_library() -> None:
    code = (
        "import sys\n"
        "from evalkit.metrics import create\n"
        "metric = create('semantic_similarity')\n"
        "metric.signature()\n"
        "heavy = {'torch', 'sentence_transformers', 'transformers'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
