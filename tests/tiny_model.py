"""A tiny random-weight Llama chat model, built locally in about a second.

It has the shape of a real chat model (byte-level BPE tokenizer, ChatML special tokens,
chat template, eos/pad set) so every engine code path runs on it; its weights are random,
so tests built on it check plumbing, never content. The "gemma" style swaps in a chat
template written like Gemma's: turns between <start_of_turn> and <end_of_turn>, and an
exception for a system message or roles that do not alternate.
"""

from __future__ import annotations

import itertools
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Gemma's own template (gemma-7b-it, gemma-2-9b-it) less its bos token: it raises on a system turn.
GEMMA_STYLE_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# style -> (chat template, extra special tokens, end-of-turn token)
STYLES = {
    "chatml": (CHAT_TEMPLATE, [], "<|im_end|>"),
    "gemma": (GEMMA_STYLE_TEMPLATE, ["<start_of_turn>", "<end_of_turn>"], "<end_of_turn>"),
}
VOCAB_SIZE = 2048


def _training_sentences() -> list[str]:
    subjects = ["The model", "A user", "The assistant", "Our team", "The dataset", "A reviewer"]
    verbs = ["labels", "writes", "checks", "rejects", "answers", "summarises"]
    objects = ["the prompt", "a harmful request", "the JSON answer", "every category", "a safe reply",
               "the instruction", "ten examples", "the taxonomy"]
    extras = ['{"label": "safe", "score": 1}', "yes", "no", "positive", "negative", "Unknown", "0123456789"]
    sentences = [f"{s} {v} {o}." for s, v, o in itertools.product(subjects, verbs, objects)]
    return sentences + extras * 20


def build_tiny_model(path: Path, style: str = "chatml") -> Path:
    """Write tokenizer, config, generation config and random weights to `path`; return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chat_template, extra_tokens, end_of_turn = STYLES[style]
    path.mkdir(parents=True, exist_ok=True)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS + extra_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    backend.train_from_iterator(_training_sentences(), trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|im_start|>", eos_token=end_of_turn,
        pad_token="<|endoftext|>", unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(path)

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)  # the same weights on every build, so test outcomes never depend on the run
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(path)
    return path
