"""Train the demo's LoRA adapter: SmolLM2-135M-Instruct learns the terse answer format.

    python golden/train_adapter.py --out golden/adapters/terse      # ~1 min on 2 CPU cores

The model answers "The capital of France is Paris." where the suites want "Paris", and wraps
numbers in sentences. The adapter is trained on ``golden/train_terse.jsonl`` (written by
``golden/make_train_terse.py``; no input overlaps the golden test files) to answer with the city
only and the number only. Finetuning here is for form: the training questions are about other
places and other unit pairs than the test questions.

Every training prompt is rendered exactly as the suites' candidates render it: the row's suite
file (``suites/<suite>.yaml``) gives the system message and prompt template, and the candidate
itself (``HFCandidate.render``) applies the chat template. The loss covers only the answer tokens
and the end-of-turn token. A seed fixes the LoRA initialisation and the batch order; the output
folder is written atomically (a crash never leaves a half-written adapter).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TRAIN_FILE = ROOT / "golden" / "train_terse.jsonl"
SUITES = ROOT / "suites"
MODEL = "smollm2-135m-instruct"
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
IGNORE = -100
"""Label of positions the loss skips (the prompt and the padding)."""


@dataclass(frozen=True)
class TrainConfig:
    out: Path
    seed: int = 0
    steps: int = 30
    batch_size: int = 8
    lr: float = 2e-3
    rank: int = 8
    alpha: int = 16


@dataclass(frozen=True)
class Encoded:
    """One training example: prompt + answer ids, labels only on the answer."""

    id: str
    input_ids: list[int]
    labels: list[int]


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="adapter folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=int, default=16)
    args = parser.parse_args(argv)
    return TrainConfig(
        out=args.out,
        seed=args.seed,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        rank=args.rank,
        alpha=args.alpha,
    )


def encode_examples(candidate: Any) -> list[Encoded]:
    """Each train row rendered through its suite's templates and the candidate's chat template."""
    from evalkit.golden import load_golden
    from evalkit.prompts import render_request
    from evalkit.spec import load_suite

    suites: dict[str, Any] = {}
    _, tokenizer = candidate.loaded()
    end = tokenizer.eos_token  # <|im_end|>: the template closes every turn with it
    encoded = []
    for example in load_golden(TRAIN_FILE):
        name = example.fields["suite"]
        suite = suites.setdefault(name, load_suite(SUITES / f"{name}.yaml"))
        request = render_request(suite, example)
        _, prompt_ids = candidate.render(request)
        answer = example.references[0]
        answer_ids = tokenizer(answer + end, add_special_tokens=False)["input_ids"]
        encoded.append(
            Encoded(
                id=example.id,
                input_ids=[*prompt_ids, *answer_ids],
                labels=[IGNORE] * len(prompt_ids) + list(answer_ids),
            )
        )
        _check_matches_template(tokenizer, request, answer, encoded[-1])
    return encoded


def _check_matches_template(tokenizer: Any, request: Any, answer: str, encoded: Encoded) -> None:
    """The chat template with the answer as an assistant turn must tokenize to our sequence
    (plus the template's trailing newline): then training sees what inference sees."""
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    messages.append({"role": "assistant", "content": answer})
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if ids[: len(encoded.input_ids)] != encoded.input_ids:
        raise SystemExit(f"train_adapter: the chat template renders {encoded.id} differently")


def batches(examples: list[Encoded], config: TrainConfig) -> list[list[Encoded]]:
    """``steps`` batches from seeded shuffles of the whole set (epoch after epoch)."""
    rng = random.Random(config.seed)
    order: list[Encoded] = []
    while len(order) < config.steps * config.batch_size:
        epoch = list(examples)
        rng.shuffle(epoch)
        order += epoch
    size = config.batch_size
    return [order[i * size : (i + 1) * size] for i in range(config.steps)]


def collate(batch: list[Encoded], pad_id: int) -> dict[str, Any]:
    """Right padding: positions after the text are masked out and carry no loss."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train(config: TrainConfig) -> Path:
    """Train and save the adapter to ``config.out``; returns the folder."""
    import torch
    from peft import LoraConfig, get_peft_model

    from evalkit.candidates.hf import HFCandidate
    from evalkit.spec import CandidateSpec

    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True)
    candidate = HFCandidate("train", CandidateSpec(model=MODEL, device="cpu"), ROOT)
    model, tokenizer = candidate.loaded()
    examples = encode_examples(candidate)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=0.0,
        target_modules=TARGET_MODULES,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    # Recorded as the alias, not this machine's cache path: evalkit matches it to the candidate.
    peft_model.peft_config["default"].base_model_name_or_path = MODEL
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=config.lr
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    for step, batch in enumerate(batches(examples, config), start=1):
        loss = peft_model(**collate(batch, tokenizer.pad_token_id)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step == 1 or step % 5 == 0 or step == config.steps:
            print(f"step {step:3d}/{config.steps}  loss {loss.item():.4f}", flush=True)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    save_atomically(peft_model, config.out)
    print(
        f"trained {config.steps} steps x {config.batch_size} of {len(examples)} examples in "
        f"{seconds:.1f} s ({cpu_seconds:.1f} s CPU)"
    )
    print(f"wrote {config.out}")
    return config.out


def save_atomically(peft_model: Any, out: Path) -> None:
    """Save into a temporary sibling, then rename: never a half-written adapter at ``out``."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        peft_model.save_pretrained(tmp, save_embedding_layers=False)  # LoRA tensors only
        make_reproducible(tmp)
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_reproducible(folder: Path) -> None:
    """Same seed, same bytes: peft writes ``target_modules`` from a set, whose order changes
    with Python's hash seed from run to run, so we sort it (peft reads it back as a set). The
    generated model card (README.md, boilerplate) goes."""
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    (folder / "README.md").unlink(missing_ok=True)
    for file in folder.iterdir():
        file.chmod(0o644)


def main(argv: list[str] | None = None) -> int:
    for name, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "EVALKIT_PROGRESS": os.environ.get("EVALKIT_PROGRESS", "0"),
    }.items():
        os.environ.setdefault(name, value)
    sys.path.insert(0, str(ROOT))  # evalkit from this checkout when run as a script
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
