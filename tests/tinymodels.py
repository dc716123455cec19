"""Tiny Llama models built from a config in about a second, for fast offline unit tests.

A real tokenizer (BPE trained on a built-in corpus in 0.01 s) and a 2-layer Llama give the same
code paths as a real model: chat templates, padding, special tokens, safetensors on disk. The
weights are random, so outputs are gibberish, but they are deterministic for a seed and differ
between seeds, which is all tests of batching, caching and fingerprints need.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
ALPHABET = list(string.ascii_letters + string.digits + string.punctuation + "\n")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_SUBJECTS = ["The cat", "A dog", "My friend", "The teacher", "Our team", "The bird", "Paris"]
_VERBS = ["likes", "sees", "finds", "keeps", "wants", "reads", "answers"]
_OBJECTS = ["the red ball.", "a small house.", "the capital city.", "fresh water.", "the answer."]
_QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a cat have?",
    "Which colour is the sky?",
    "Who wrote the letter?",
    "Where is the river?",
]


def corpus() -> list[str]:
    """About a hundred simple English sentences: enough text for a few hundred BPE merges."""
    sentences = [f"{s} {v} {o}" for s in _SUBJECTS for v in _VERBS for o in _OBJECTS[:2]]
    return sentences + _QUESTIONS + [f"{q} {s} knows." for q in _QUESTIONS for s in _SUBJECTS]


def make_tiny_tokenizer(vocab_size: int = 400, chat_template: bool = True) -> Any:
    """Character BPE over printable ASCII with SentencePiece-style spaces (Metaspace), wrapped
    in ``PreTrainedTokenizerFast``.

    Unlike byte-level BPE, every token decodes to readable text, so a random model writes
    readable word salad (not broken UTF-8), which stop-string tests and failure messages need.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    # "first": no extra space marker after special tokens, so chat prompts decode exactly.
    backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    backend.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=ALPHABET,
        show_progress=False,
    )
    backend.train_from_iterator(corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    if chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def make_tiny_llama(
    folder: Path,
    seed: int = 0,
    chat_template: bool = True,
    vocab_size: int = 400,
    max_position_embeddings: int = 512,
    hidden_size: int = 48,
    intermediate_size: int = 96,
) -> Path:
    """Save a random 2-layer Llama and its tokenizer to ``folder``; returns ``folder``.

    ``initializer_range`` is larger than Llama's 0.02 so that logits are peaked: greedy outputs
    then vary from token to token (instead of repeating one near-tie token) and batched and
    one-by-one decoding cannot flip a near tie through float rounding.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tiny_tokenizer(vocab_size=vocab_size, chat_template=chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        initializer_range=0.3,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_lora(
    base: Path,
    folder: Path,
    seed: int = 0,
    steps: int = 15,
    target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
    rank: int = 4,
) -> Path:
    """Train a LoRA adapter on ``base`` for a few steps (random token batches, seeded; about a
    second) and save it to ``folder`` with peft; ``steps=0`` saves it untrained (B = 0)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(target_modules))
    peft_model = get_peft_model(model, config)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=3e-2)
    vocab = model.config.vocab_size
    for _ in range(steps):
        ids = torch.randint(0, vocab, (4, 16))
        peft_model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.save_pretrained(folder)
    return Path(folder)


def make_noisy_copy(source: Path, folder: Path, noise: float, seed: int = 0) -> Path:
    """``source`` with Gaussian noise (std ``noise``) added to every weight: a draft model that
    agrees with its target often but not always, with the same tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * noise)
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder
