"""The transformers backend: any causal LM `from_pretrained` can load, on CPU or GPU.

Each request is rendered and counted alone (chat_template.encode_prompt): one whose template
raises or whose prompt plus answer exceed the context fails by itself, before the batch; a
system turn is folded into the first user turn where the template refuses one. Requests are
batched with left padding in chunks of `batch_size` rows. Closed choices are scored by
log-likelihood (see choice_scoring): one forward pass over the chunk's prompts,
whose KV cache is then shared by every (prompt, label) pair in a second pass, so a long
prompt is computed once however many labels it has. JSON-schema requests are generated
with the assistant turn prefilled with `{`; validating the JSON is the calling step's job.

Latency per request is the chunk's wall time divided by the requests in it, so latencies
add up to the time spent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tasks.engines.base import ChatRequest, Choice, Completion, InProcessEngine, SamplingParams
from tasks.engines.chat_template import accepts_system_role, encode_prompt
from tasks.engines.choice_scoring import choices_from_scores, label_continuation
from tasks.engines.packaged import is_packaged, resolve_packaged
from tasks.stopping import raise_if_stopped, stop_requested

JSON_PREFILL = "{"  # small models drift into prose; starting the answer at `{` keeps them on JSON


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        # bf16 halves GPU memory at no quality cost; float32 is the dtype every CPU runs well.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


class TransformersEngine(InProcessEngine):
    backend = "transformers"

    def __init__(
        self,
        model_id: str,
        revision: str | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_model_len: int | None = None,
    ) -> None:
        super().__init__(model_id, revision)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.perf_counter()
        source, load_revision = model_id, revision
        if is_packaged(model_id):
            folder, self.revision = resolve_packaged(model_id)
            source, load_revision = str(folder), None
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(source, revision=load_revision)
        self.tokenizer.padding_side = "left"  # generation appends on the right, so pad on the left
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            source, revision=load_revision, dtype=resolve_dtype(dtype, self.device)
        ).to(self.device)
        self.model.eval()
        self.context_length = max_model_len or getattr(self.model.config, "max_position_embeddings", None)
        self.fold_system = not accepts_system_role(self.tokenizer)
        generation_stops = self.model.generation_config.eos_token_id
        if isinstance(generation_stops, int):
            generation_stops = [generation_stops]
        self.stop_token_ids = {self.tokenizer.eos_token_id, *(generation_stops or [])}
        self.usage.load_seconds = time.perf_counter() - started

    def _generate_all(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        started = time.perf_counter()
        results: dict[int, Completion] = {}
        closed = [i for i, r in enumerate(requests) if r.choices is not None]
        # One generate() call takes one set of sampling settings, so open requests are grouped by
        # them, seeds aside: per-request seeds would otherwise turn every batch into single calls.
        open_groups: dict[tuple[SamplingParams, bool], list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            if request.choices is None:
                open_groups[(request.sampling.model_copy(update={"seed": None}), request.json_schema is not None)].append(i)

        for chunk in _chunks(closed, self.batch_size):
            raise_if_stopped()
            for i, completion in zip(chunk, self._score_choices([requests[i] for i in chunk]), strict=True):
                results[i] = completion
        for (sampling, wants_json), indices in open_groups.items():
            rows_per_request = sampling.n if sampling.temperature > 0 else 1
            for chunk in _chunks(indices, max(1, self.batch_size // rows_per_request)):
                raise_if_stopped()
                batch = [requests[i] for i in chunk]
                completions = self._generate(batch, _batch_sampling(sampling, batch), JSON_PREFILL if wants_json else "")
                for i, completion in zip(chunk, completions, strict=True):
                    results[i] = completion

        completions = [results[i] for i in range(len(requests))]
        self.usage.record(completions, time.perf_counter() - started)
        return completions

    def close(self) -> None:
        import gc

        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- open generation -------------------------------------------------------------------

    def _generate(self, batch: list[ChatRequest], sampling: SamplingParams, prefill: str) -> list[Completion]:
        import torch
        from transformers import StoppingCriteriaList

        started = time.perf_counter()
        encoded = [self._encode(r, sampling.max_tokens, prefill) for r in batch]
        runnable = [j for j, ids in enumerate(encoded) if not isinstance(ids, Completion)]
        outputs: dict[int, tuple[Choice, ...]] = {}
        if runnable:
            padded = self.tokenizer.pad({"input_ids": [encoded[j] for j in runnable]},
                                        return_tensors="pt").to(self.device)
            sample = sampling.temperature > 0
            rows_per_request = sampling.n if sample else 1
            options: dict[str, Any] = {
                "max_new_tokens": sampling.max_tokens, "do_sample": sample,
                "repetition_penalty": sampling.repetition_penalty, "num_return_sequences": rows_per_request,
                "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": sorted(self.stop_token_ids),
            }
            if sample:
                # top_k=0: only temperature and top_p shape the distribution, as in vLLM and OpenAI.
                options |= {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
            with self._seeded(sampling.seed), torch.inference_mode():
                generated = self.model.generate(**padded, **options,
                                               stopping_criteria=StoppingCriteriaList([_StopRequested()]))
            raise_if_stopped()  # a stopped generate() returns cut-off answers: never use them
            new_tokens = generated[:, padded["input_ids"].shape[1]:].tolist()
            for position, j in enumerate(runnable):
                rows = new_tokens[position * rows_per_request:(position + 1) * rows_per_request]
                decoded = tuple(self._decode(row, prefill) for row in rows)
                # Greedy decoding gives one answer; n copies of it is what temperature 0 means.
                outputs[j] = decoded if sample else decoded * sampling.n
        latency = (time.perf_counter() - started) / len(batch)
        return [
            Completion(choices=outputs[j], prompt_tokens=len(ids), latency_s=latency)
            if not isinstance(ids, Completion) else dataclasses.replace(ids, latency_s=latency)
            for j, ids in enumerate(encoded)
        ]

    def _encode(self, request: ChatRequest, answer_tokens: int, prefill: str = "") -> list[int] | Completion:
        return encode_prompt(self.tokenizer, request.messages, fold_system=self.fold_system,
                             context_length=self.context_length, answer_tokens=answer_tokens, prefill=prefill)

    def _decode(self, tokens: list[int], prefill: str) -> Choice:
        stop_at = next((k for k, token in enumerate(tokens) if token in self.stop_token_ids), None)
        content = tokens if stop_at is None else tokens[:stop_at]
        return Choice(
            text=prefill + self.tokenizer.decode(content, skip_special_tokens=True),
            finish_reason="length" if stop_at is None else "stop",
            completion_tokens=len(tokens) if stop_at is None else stop_at + 1,
        )

    @contextmanager
    def _seeded(self, seed: int | None) -> Iterator[None]:
        """Seed this batch's sampling without disturbing the caller's random state."""
        import torch

        if seed is None:
            yield
            return
        cuda_devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            yield

    # -- closed choices --------------------------------------------------------------------

    def _score_choices(self, batch: list[ChatRequest]) -> list[Completion]:
        started = time.perf_counter()
        labels = [{label: label_continuation(self.tokenizer, label) for label in r.choices or ()} for r in batch]
        encoded: list[list[int] | Completion] = [
            self._encode(request, max(len(ids) for ids in request_labels.values())) if request_labels
            else Completion.failed("a closed-choice request needs at least one choice")
            for request, request_labels in zip(batch, labels, strict=True)
        ]
        runnable = [j for j, ids in enumerate(encoded) if not isinstance(ids, Completion)]
        scores = self._label_logprobs([encoded[j] for j in runnable], [labels[j] for j in runnable]) if runnable else []
        by_request = dict(zip(runnable, scores, strict=True))
        latency = (time.perf_counter() - started) / len(batch)
        completions = []
        for j, (request, ids) in enumerate(zip(batch, encoded, strict=True)):
            if isinstance(ids, Completion):
                completions.append(dataclasses.replace(ids, latency_s=latency))
                continue
            counts = {label: len(label_ids) for label, label_ids in labels[j].items()}
            completions.append(Completion(choices=choices_from_scores(request, by_request[j], counts),
                                          prompt_tokens=len(ids), latency_s=latency))
        return completions

    def _label_logprobs(self, prompts: list[list[int]], labels: list[dict[str, list[int]]]) -> list[dict[str, float]]:
        """Summed log-probability of every label continuation after its prompt, in two passes:
        the prompts once (left-padded), then all (prompt, label) pairs on the shared KV cache."""
        import torch

        encoded = self.tokenizer.pad({"input_ids": prompts}, return_tensors="pt").to(self.device)
        prompt_mask = encoded["attention_mask"]
        pairs = [(j, label, ids) for j, request_labels in enumerate(labels) for label, ids in request_labels.items()]
        width = max(len(ids) for _, _, ids in pairs)
        # Built on the CPU and moved once: one transfer, not one per pair, when on a GPU.
        label_ids = torch.full((len(pairs), width), self.tokenizer.pad_token_id)
        label_mask = torch.zeros((len(pairs), width), dtype=prompt_mask.dtype)
        for row, (_, _, ids) in enumerate(pairs):
            label_ids[row, :len(ids)] = torch.tensor(ids)
            label_mask[row, :len(ids)] = 1
        owner = torch.tensor([j for j, _, _ in pairs]).to(self.device)
        label_ids, label_mask = label_ids.to(self.device), label_mask.to(self.device)

        with torch.inference_mode():
            prompt_out = self.model(input_ids=encoded["input_ids"], attention_mask=prompt_mask,
                                    position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
                                    use_cache=True, logits_to_keep=1)
            next_token_logprobs = prompt_out.logits[:, -1, :].float().log_softmax(-1)
            cache = prompt_out.past_key_values
            cache.batch_select_indices(owner)  # one cache row per (prompt, label) pair
            prompt_lengths = prompt_mask.sum(-1)[owner]
            label_out = self.model(
                input_ids=label_ids, attention_mask=torch.cat([prompt_mask[owner], label_mask], dim=-1),
                position_ids=prompt_lengths[:, None] + torch.arange(width, device=self.device),
                past_key_values=cache, use_cache=True,
            )
            # Label token t is predicted by the prompt's last position (t = 0) or label position t - 1.
            first = next_token_logprobs[owner].gather(-1, label_ids[:, :1])
            rest = label_out.logits[:, :-1, :].float().log_softmax(-1).gather(-1, label_ids[:, 1:, None])[..., 0]
            token_logprobs = torch.cat([first, rest], dim=-1)
            summed = torch.where(label_mask.bool(), token_logprobs, 0.0).sum(-1).tolist()

        scores: list[dict[str, float]] = [{} for _ in prompts]
        for (j, label, _), value in zip(pairs, summed, strict=True):
            scores[j][label] = value
        return scores


def _batch_sampling(sampling: SamplingParams, batch: Sequence[ChatRequest]) -> SamplingParams:
    """One seed for a batch, derived from its requests' seeds: the same batch (a rerun, a
    resumed shard) samples the same answers; a batch without seeds stays unseeded."""
    seeds = [r.sampling.seed for r in batch]
    if all(seed is None for seed in seeds):
        return sampling
    digest = hashlib.sha256(repr(seeds).encode()).digest()
    return sampling.model_copy(update={"seed": int.from_bytes(digest[:4], "big") % (2**31 - 1)})


class _StopRequested:
    """A generate() stopping criterion: ends the batch at the next token once a stop is requested
    (a SmolLM2 batch on 2 cores runs for seconds to minutes)."""

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), stop_requested(), dtype=torch.bool, device=input_ids.device)
