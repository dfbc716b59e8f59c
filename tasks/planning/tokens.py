"""Counting a model's tokens for a plan: its tokenizer when one loads offline, otherwise
an approximation the plan names.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path

from schemas.profile import EngineConfig, Profile
from schemas.spec import DatasetSpec
from tasks.config import alignforge_home
from tasks.kinds import stage_two_models
from tasks.planning.loads import engine_label

TokenCounter = Callable[[str], int]

CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text under BPE tokenizers


def spec_models(spec: DatasetSpec) -> list[str]:
    """Every model id the spec's build uses, in order of first use."""
    models = spec.models
    return list(dict.fromkeys(m for m in (models.classifier, models.expander, *stage_two_models(spec)) if m))


def approximate_token_counter(config: EngineConfig) -> tuple[TokenCounter, str]:
    """The counter used when no tokenizer is given: the scripted backend's own rule (one token
    per word), otherwise characters / CHARS_PER_TOKEN."""
    if config.backend == "scripted":
        return (lambda text: len(text.split())), "words (the scripted backend's tokens)"
    return (lambda text: math.ceil(len(text) / CHARS_PER_TOKEN)), f"approximation: characters / {CHARS_PER_TOKEN}"


def token_counters(spec: DatasetSpec, profile: Profile,
              tokenizer_count: TokenCounter | Mapping[str, TokenCounter] | None
              ) -> tuple[dict[str, TokenCounter], dict[str, str]]:
    """A counter and its description per spec model: the given one(s), else the approximation."""
    counters, described = {}, {}
    for model in spec_models(spec):
        given = tokenizer_count.get(model) if isinstance(tokenizer_count, Mapping) else tokenizer_count
        if given is not None:
            counters[model], described[model] = given, "tokenizer"
        else:
            counters[model], described[model] = approximate_token_counter(profile.engine_for(model))
    return counters, described


# SmolLM2's transformers export; tasks.engines.packaged.smollm2_folder writes it on first load
# (~18 s), which a plan does not trigger: without it, its tokens are approximated.
SMOLLM2_EXPORT = Path("models") / "smollm2-135m-instruct"


def load_token_counters(spec: DatasetSpec, profile: Profile) -> dict[str, TokenCounter]:
    """Counters for the spec's models whose tokenizer loads without network access."""
    counters: dict[str, TokenCounter] = {}
    by_engine: dict[str, TokenCounter | None] = {}
    for model in spec_models(spec):
        config = profile.engine_for(model)
        label = engine_label(config, model)
        if label not in by_engine:
            by_engine[label] = _offline_tokenizer(config, model)
        if by_engine[label] is not None:
            counters[model] = by_engine[label]
    return counters


def _offline_tokenizer(config: EngineConfig, spec_model: str) -> TokenCounter | None:
    if config.backend not in ("transformers", "vllm", "embedding"):
        return None
    source, revision = config.resolved_model(spec_model), config.revision
    try:
        if source == "packaged:smollm2":
            source, revision = str(alignforge_home() / SMOLLM2_EXPORT), None
        elif source == "packaged:minilm":
            from tasks.engines.packaged import minilm_path

            source, revision = str(minilm_path()), None
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, local_files_only=True)
    except (OSError, ValueError, ImportError) as error:
        logging.getLogger("alignforge").info("no offline tokenizer for %s (%s): tokens approximated", source, error)
        return None
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
