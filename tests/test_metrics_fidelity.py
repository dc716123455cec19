"""Fidelity metrics (KL divergence, top-1 agreement) against a direct computation from the two
models' full logits: one unpadded forward pass each, log_softmax in float64, KL summed over the
whole vocabulary."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy
import pytest
from suitefiles import CAPITALS, write_jsonl, write_suite
from tinymodels import make_tiny_llama, make_tiny_lora

from evalkit.cache import Cache
from evalkit.candidates.base import GenerationRequest, Message
from evalkit.candidates.hf import HFCandidate
from evalkit.errors import SpecError
from evalkit.metrics import BaseRef, Sample, Scored, create, run_figures, split_score
from evalkit.metrics import fidelity as fidelity_module
from evalkit.metrics.divergence import kl_from_top_logprobs
from evalkit.run import RunOptions, prepare_suite, run_suite
from evalkit.spec import CandidateSpec, GenerationSpec

QUESTIONS = [
    ("a", "What is the capital of France?", "Paris"),
    ("b", "Which colour is the sky? Tell me in a few words.", "The sky is blue."),
    ("c", "Who?", "My friend knows the teacher."),
]


def chat_sample(sample_id: str, question: str, reference: str, output: str = "") -> Sample:
    messages = (Message("system", "Answer briefly."), Message("user", question))
    return Sample(sample_id, output, (reference,), question, {}, messages)


SAMPLES = [chat_sample(*q) for q in QUESTIONS]


def hf(folder: Path, name: str = "c", **spec: Any) -> HFCandidate:
    return HFCandidate(name, CandidateSpec(model=str(folder), **spec), folder.parent)


def direct(base: HFCandidate, candidate: HFCandidate, sample: Sample) -> tuple[list[float], float]:
    """Per-position KL(base || candidate) over the full vocabulary, and the top-1 agreement;
    the chat template applied by the tokenizer, the answer as the tail of prompt + answer."""
    import torch

    logprobs = []
    for model_of in (base, candidate):
        model, tokenizer = model_of.loaded()
        chat = [{"role": m.role, "content": m.content} for m in sample.messages]
        prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        whole = tokenizer(prompt + sample.reference, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([whole])).logits[0].double()
        logprobs.append(torch.log_softmax(logits[len(prompt_ids) - 1 : len(whole) - 1], dim=-1))
    p, q = logprobs
    kl = (p.exp() * (p - q)).sum(-1)
    agree = (p.argmax(-1) == q.argmax(-1)).double().mean()
    return kl.tolist(), float(agree)


def score(
    column: str,
    samples: Sequence[Sample],
    candidate: Any,
    base: BaseRef,
    **options: Any,
) -> list[tuple[float | None, dict[str, Any]]]:
    metric = create(column, options)
    raw = metric.score_against(samples, candidate, base, GenerationSpec(batch_size=2))
    return [split_score(r) for r in raw]


def base_ref(folder: Path, opened: list[str] | None = None) -> BaseRef:
    def open_base() -> HFCandidate:
        if opened is not None:
            opened.append("base")
        return hf(folder, "base")

    return BaseRef("base", f"fp-{folder.name}", open_base)


@pytest.mark.parametrize("top_k", [1000, 5])
def test_kl_equals_direct_computation_from_full_logits(
    tiny_model: Path, tiny_model_b: Path, top_k: int
) -> None:
    """k >= the vocabulary (400): exact to 1e-5. k = 5: a lower bound, short of the exact value
    by at most the reported tail bound."""
    base, candidate = hf(tiny_model, "base"), hf(tiny_model_b)
    try:
        ref = base_ref(tiny_model)
        kls = score("kl_divergence", SAMPLES, candidate, ref, top_k=top_k)
        tops = score("top1_agreement", SAMPLES, candidate, ref, top_k=top_k)
        for sample, (kl, detail), (top1, _) in zip(SAMPLES, kls, tops, strict=True):
            tokens, agreement = direct(base, candidate, sample)
            exact = math.fsum(tokens) / len(tokens)
            assert detail["n_tokens"] == len(tokens)
            assert top1 == pytest.approx(agreement, abs=1e-12)
            assert kl is not None
            if top_k >= 400:
                assert kl == pytest.approx(exact, abs=1e-5)
                assert detail["kl_tokens"] == pytest.approx(tokens, abs=1e-5)
                assert detail["tail_bound"] == 0
            else:
                assert 0 < exact - kl <= detail["tail_bound"] + 1e-9
    finally:
        base.close()
        candidate.close()


def test_base_against_itself_is_exactly_zero(tiny_model: Path) -> None:
    base = hf(tiny_model, "base")
    try:
        ref = BaseRef("base", "fp", lambda: pytest.fail("the base is scored itself"), is_self=True)
        kls = score("kl_divergence", SAMPLES, base, ref)
        tops = score("top1_agreement", SAMPLES, base, ref)
        assert [v for v, _ in kls] == [0.0, 0.0, 0.0]
        assert all(d["kl_tokens"] == [0.0] * d["n_tokens"] for _, d in kls)
        assert [v for v, _ in tops] == [1.0, 1.0, 1.0]
    finally:
        base.close()


def scaled_adapter(adapter: Path, folder: Path, factor: float) -> Path:
    """A copy of ``adapter`` with every LoRA B matrix multiplied by ``factor``."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(adapter, folder)
    weights = load_file(adapter / "adapter_model.safetensors")
    scaled = {k: v * factor if "lora_B" in k else v for k, v in weights.items()}
    save_file(scaled, folder / "adapter_model.safetensors")
    return folder


def test_kl_grows_with_the_scale_of_a_lora_adapter(tiny_model: Path, tmp_path: Path) -> None:
    adapter = make_tiny_lora(tiny_model, tmp_path / "lora", steps=15)
    ref = base_ref(tiny_model)
    means = []
    for factor in (0.05, 0.2, 0.5, 1.0):
        folder = scaled_adapter(adapter, tmp_path / f"x{factor}", factor)
        candidate = hf(tiny_model, f"lora{factor}", adapter=str(folder))
        try:
            values = [v for v, _ in score("kl_divergence", SAMPLES, candidate, ref, top_k=1000)]
        finally:
            candidate.close()
        assert all(v is not None and v > 0 for v in values)
        means.append(math.fsum(values) / len(values))  # type: ignore[arg-type]
    assert means == sorted(means) and means[0] < means[-1] / 10


def test_one_forward_pass_for_both_columns_and_the_base_distribution_cached(
    tiny_model: Path, tiny_model_b: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes: list[int] = []
    original = fidelity_module.forward_continuations

    def counting(model: Any, rows: Sequence[Any], *args: Any, **kwargs: Any) -> None:
        passes.append(len(rows))
        original(model, rows, *args, **kwargs)

    monkeypatch.setattr(fidelity_module, "forward_continuations", counting)
    opened: list[str] = []
    ref = base_ref(tiny_model, opened)
    kl_metric, top1_metric = create("kl_divergence"), create("top1_agreement")
    candidate = hf(tiny_model_b)
    try:
        kl_metric.score_against(SAMPLES, candidate, ref, GenerationSpec())
        top1_metric.score_against(SAMPLES, candidate, ref, GenerationSpec())
    finally:
        candidate.close()
    # The base once (its distribution was not cached), the candidate once: 3 rows each.
    assert passes == [3, 3] and opened == ["base"]


def capitals_suite(tmp_path: Path, base: Path, other: Path, metrics: list[Any]) -> Path:
    write_jsonl(tmp_path / "golden.jsonl", CAPITALS[:4])
    return write_suite(
        tmp_path / "suite.yaml",
        {
            "suite": "fidelity",
            "dataset": "golden.jsonl",
            "prompt": "What is the capital of {{ country }}?",
            "generation": {"max_new_tokens": 4, "batch_size": 4},
            "candidates": {"base": {"model": str(base)}, "other": {"model": str(other)}},
            "metrics": metrics,
            "gates": {"kl_divergence": {"max": 100}},
            "compare_to": "base",
        },
    )


def test_suite_run_computes_the_base_distribution_once_and_caches_everything(
    tmp_path: Path, tiny_model: Path, tiny_model_b: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = capitals_suite(tmp_path, tiny_model, tiny_model_b, ["kl_divergence", "top1_agreement"])
    loads: list[str] = []
    original = HFCandidate.loaded

    def counting(self: HFCandidate) -> Any:
        if self._model is None:  # type: ignore[attr-defined]
            loads.append(self.name)
        return original(self)

    monkeypatch.setattr(HFCandidate, "loaded", counting)
    options = RunOptions(
        report_dir=tmp_path / "r", cache=Cache(tmp_path / "c.sqlite"), progress=False
    )
    result = run_suite(prepare_suite(path), options)
    assert loads == ["base", "other"]  # the base's distribution came from the cache
    base, other = result.candidates["base"], result.candidates["other"]
    assert base.generated is False  # neither column reads outputs
    assert all(e.scores["kl_divergence"] == 0.0 for e in base.examples)
    assert all(e.scores["top1_agreement"] == 1.0 for e in base.examples)
    kl = other.aggregates["kl_divergence"]
    tokens = [t for e in other.examples for t in e.details["kl_divergence"]["kl_tokens"]]
    assert kl.corpus == pytest.approx(math.fsum(tokens) / len(tokens))
    assert kl.extra["max"] == max(tokens)
    assert kl.extra["p99"] == pytest.approx(float(numpy.percentile(tokens, 99)))
    assert kl.mean is not None and kl.mean > 0
    assert [g.candidate for g in result.gates] == ["other"]  # not the base against itself
    # A re-run loads no model: every value comes from the cache.
    loads.clear()
    again = run_suite(prepare_suite(path), options)
    assert loads == []
    assert again.candidates["other"].aggregates["kl_divergence"] == kl


def test_on_base_output_scores_the_base_greedy_output(
    tmp_path: Path, tiny_model: Path, tiny_model_b: Path
) -> None:
    path = capitals_suite(
        tmp_path, tiny_model, tiny_model_b, [{"kl_divergence": {"on": "base_output"}}]
    )
    options = RunOptions(
        report_dir=tmp_path / "r", cache=Cache(tmp_path / "c.sqlite"), progress=False
    )
    result = run_suite(prepare_suite(path), options)
    base, other = result.candidates["base"], result.candidates["other"]
    assert all(e.scores["kl_divergence"] == 0.0 for e in base.examples)
    samples = [
        chat_sample(e.id, e.messages[-1]["content"], e.output or "")
        for e in base.examples
        if e.output
    ]
    b, c = hf(tiny_model, "base"), hf(tiny_model_b)
    try:
        for sample in samples:
            example = next(e for e in other.examples if e.id == sample.id)
            value = example.scores["kl_divergence"]
            tokens, _ = direct_user_only(b, c, sample)
            # top_k 256 < 400 tokens: a lower bound within the reported tail bound (1e-5: the
            # suite ran padded batches, the direct computation one example at a time)
            gap = math.fsum(tokens) / len(tokens) - value
            assert -1e-5 <= gap <= example.details["kl_divergence"]["tail_bound"] + 1e-5
    finally:
        b.close()
        c.close()


def direct_user_only(base: HFCandidate, candidate: HFCandidate, sample: Sample) -> Any:
    """``direct`` for a suite without a system message."""
    user_only = Sample(
        sample.id, "", sample.references, sample.prompt, {}, (Message("user", sample.prompt),)
    )
    return direct(base, candidate, user_only)


def test_run_figures_come_from_summarize_over_scored_examples() -> None:
    """The run-level hook (``summarize``) pools every answer token of the examples that have a
    value: numpy's mean, percentiles and max; examples without a value add nothing."""
    sample = SAMPLES[0]
    kl = [
        Scored(sample, 0.2, {"kl_tokens": [0.1, 0.3], "tail_bound": 0.01, "n_tokens": 2}),
        Scored(sample, 0.5, {"kl_tokens": [0.0, 0.9, 0.6], "tail_bound": 0.02, "n_tokens": 3}),
        Scored(sample, None, {"error": "the answer has no tokens"}),
    ]
    tokens = [0.1, 0.3, 0.0, 0.9, 0.6]
    figures = run_figures(create("kl_divergence"), kl)
    assert figures.corpus == pytest.approx(numpy.mean(tokens))
    assert figures.extra["p95"] == pytest.approx(numpy.percentile(tokens, 95))
    assert figures.extra["p99"] == pytest.approx(numpy.percentile(tokens, 99))
    assert figures.extra["max"] == max(tokens)
    assert figures.extra["tail_bound_max"] == 0.02
    agree = [
        Scored(sample, 0.5, {"n_tokens": 2, "n_agree": 1}),
        Scored(sample, 1.0, {"n_tokens": 3, "n_agree": 3}),
        Scored(sample, None, {"error": "no distribution"}),
    ]
    assert run_figures(create("top1_agreement"), agree).corpus == pytest.approx(4 / 5)
    assert run_figures(create("top1_agreement"), []).corpus is None


def test_a_suite_without_compare_to_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    path = capitals_suite(tmp_path, tiny_model, tiny_model, ["kl_divergence"])
    path.write_text(path.read_text().replace("compare_to: base\n", ""))
    with pytest.raises(SpecError, match="compare_to"):
        prepare_suite(path)


def test_bad_options_are_named() -> None:
    with pytest.raises(SpecError, match="'on' must be one of reference, base_output"):
        create("kl_divergence", {"on": "output"})
    with pytest.raises(SpecError, match="top_k"):
        create("top1_agreement", {"top_k": 0})


class NoLogprobs:
    """An API-like candidate that returns no log-probs."""

    name = "remote"


class TopLogprobs:
    """A server that returns the top-k log-probs of a given continuation, from fixed tables."""

    def __init__(self, name: str, table: Callable[[int], dict[str, float]]) -> None:
        self.name = name
        self.table = table
        self.asked: list[int] = []
        self.closed = False

    def continuation_top_logprobs(
        self,
        requests: Sequence[GenerationRequest],
        continuations: Sequence[str],
        top_k: int,
        *,
        separator: str | None = None,
    ) -> list[list[dict[str, float]] | str]:
        self.asked.append(top_k)
        out: list[list[dict[str, float]] | str] = []
        for answer in continuations:
            positions = [self.table(i) for i in range(len(answer.split()))]
            out.append([dict(sorted(p.items(), key=lambda kv: -kv[1])[:top_k]) for p in positions])
        return out

    def close(self) -> None:
        self.closed = True


def softmax_table(logits: Sequence[float]) -> dict[str, float]:
    total = math.log(math.fsum(math.exp(x) for x in logits))
    return {f"t{i}": x - total for i, x in enumerate(logits)}


def test_api_candidates_without_logprobs_are_missing_with_the_reason(tiny_model: Path) -> None:
    values = score("kl_divergence", SAMPLES, NoLogprobs(), base_ref(tiny_model))
    assert all(v is None for v, _ in values)
    assert all("returns no log-probs" in d["error"] for _, d in values)


def test_api_candidates_compare_top_k_log_probs() -> None:
    """With every token listed the approximation is exact: the direct KL of the two tables."""
    p = softmax_table([2.0, 1.0, 0.5, -1.0])
    q = softmax_table([1.5, 1.2, 0.0, -0.5])
    server_base = TopLogprobs("base", lambda i: p)
    server = TopLogprobs("remote", lambda i: q)
    ref = BaseRef("base", "fp", lambda: server_base)
    (kl, detail), *_ = score("kl_divergence", SAMPLES[:1], server, ref)
    exact = math.fsum(math.exp(p[t]) * (p[t] - q[t]) for t in p)
    assert kl == pytest.approx(exact, abs=1e-12)
    assert detail["method"] == "api-top-k-approx"
    assert server.asked == [20] and server_base.closed
    # Two of four tokens listed: the absent one gets the candidate's smallest listed log-prob.
    approx, agree = kl_from_top_logprobs(dict(list(p.items())[:2]), dict(list(q.items())[:2]))
    assert agree is True and approx >= 0


@pytest.mark.real_model
def test_smollm2_kl_equals_direct_computation(tmp_path: Path) -> None:
    """SmolLM2 against its own weights with noise added (same tokenizer): exact with k = the
    vocabulary, and within the reported tail bound with the default k."""
    from evalkit.candidates.models import ensure_embedded_model

    folder = ensure_embedded_model()
    noisy = make_noisy_weights(folder, tmp_path / "noisy")
    samples = [
        chat_sample("fr", "What is the capital of France? Answer with the city only.", "Paris"),
        chat_sample("x", "Name a large river.", "The Amazon river in South America."),
    ]
    base, candidate = hf(folder, "base"), hf(noisy)
    try:
        exact = score("kl_divergence", samples, candidate, base_ref(folder), top_k=49152)
        default = score("kl_divergence", samples, candidate, base_ref(folder))
        for sample, (kl, _), (lower, detail) in zip(samples, exact, default, strict=True):
            tokens, _ = direct(base, candidate, sample)
            assert kl == pytest.approx(math.fsum(tokens) / len(tokens), abs=1e-5)
            assert lower is not None and kl is not None
            assert 0 <= kl - lower <= detail["tail_bound"] + 1e-9
    finally:
        base.close()
        candidate.close()


def make_noisy_weights(source: Path, folder: Path) -> Path:
    from tinymodels import make_noisy_copy

    return make_noisy_copy(source, folder, noise=0.002)


def test_tiny_models_share_a_tokenizer(tmp_path: Path) -> None:
    """The fixtures above rely on it: the two tiny models tokenize text identically."""
    a, b = make_tiny_llama(tmp_path / "a", seed=0), make_tiny_llama(tmp_path / "b", seed=5)
    from transformers import AutoTokenizer

    text = "What is the capital of France? Paris"
    assert (
        AutoTokenizer.from_pretrained(a)(text)["input_ids"]
        == (AutoTokenizer.from_pretrained(b)(text)["input_ids"])
    )
