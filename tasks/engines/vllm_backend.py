"""The vLLM backend: in-process `vllm.LLM`, the throughput path for real-size models on GPUs.

Every request is rendered here, one at a time, by the model's chat template (a system turn
folded into the first user turn where the template refuses one: chat_template), and counted
by the model's tokenizer: a request whose template raises, or whose prompt plus answer would
not fit `max_model_len`, fails alone before the batch (`template_error`, `prompt_too_long`).
The rest go to vLLM as token ids in one `LLM.generate` call with per-request SamplingParams;
should vLLM still refuse that batch, its requests are retried one by one, so only the
offending ones fail.

JSON-schema requests are constrained by structured outputs
(`StructuredOutputsParams(json=schema)`, the API since vLLM 0.12 replaced the `guided_*`
fields). Closed choices are one constrained request each (`StructuredOutputsParams(choice=
labels)`) with top logprobs, from which constrained_choice reads every label's probability:
one prefill per prompt, whose system part (the taxonomy) vLLM's prefix cache shares across
the prompts of a dimension. (Scoring each label as its own prompt with prompt logprobs cost
one uncached prefill per label: vLLM skips the prefix cache for prompt logprobs.)
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from typing import Any

from tasks.engines.base import ChatRequest, Choice, Completion, InProcessEngine
from tasks.engines.chat_template import accepts_system_role, encode_prompt
from tasks.engines.constrained_choice import Step, label_logprobs, most_probable_at_temperature_zero
from tasks.engines.packaged import is_packaged, resolve_packaged

VLLM_MISSING = "the vllm backend needs vLLM: pip install 'alignforge[vllm]' (on a CUDA machine)"
FINISH_REASONS = {"stop": "stop", "length": "length"}
TOP_LOGPROBS = 20  # vLLM's default max_logprobs; mass beyond the listed tokens is spread (constrained_choice)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as missing:
        raise ImportError(VLLM_MISSING) from missing
    return vllm


def choice_answer_tokens(choices: Sequence[str]) -> int:
    """Tokens a constrained label answer can take: the grammar lets the model spell a label in
    any tokenization, one byte per token at worst, then end-of-turn."""
    return max(len(label.encode()) for label in choices) + 1


class VLLMEngine(InProcessEngine):
    backend = "vllm"

    def __init__(
        self,
        model_id: str,
        revision: str | None = None,
        *,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(model_id, revision)
        vllm = _import_vllm()
        started = time.perf_counter()
        source, load_revision = model_id, revision
        if is_packaged(model_id):
            folder, self.revision = resolve_packaged(model_id)
            source, load_revision = str(folder), None
        self.llm = vllm.LLM(
            model=source, revision=load_revision, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
            enforce_eager=enforce_eager, seed=seed, enable_prefix_caching=True,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.fold_system = not accepts_system_role(self.tokenizer)
        self.usage.load_seconds = time.perf_counter() - started

    def _generate_all(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        started = time.perf_counter()
        refused: dict[int, Completion] = {}
        prompts: dict[int, list[int]] = {}
        for i, request in enumerate(requests):
            encoded = self._encode(request)
            if isinstance(encoded, Completion):
                refused[i] = encoded
            else:
                prompts[i] = encoded
        outputs = dict(zip(prompts, self._run([(requests[i], ids) for i, ids in prompts.items()]), strict=True))
        latency = (time.perf_counter() - started) / max(1, len(requests))  # one batched call: its time, shared out
        completions = [refused[i] if i in refused else self._complete(request, outputs[i], latency)
                       for i, request in enumerate(requests)]
        self.usage.record(completions, time.perf_counter() - started)
        return completions

    def _encode(self, request: ChatRequest) -> list[int] | Completion:
        if request.choices is not None and not request.choices:
            return Completion.failed("a closed-choice request needs at least one choice")
        return encode_prompt(self.tokenizer, request.messages, fold_system=self.fold_system,
                             context_length=self.max_model_len, answer_tokens=self._answer_tokens(request))

    @staticmethod
    def _answer_tokens(request: ChatRequest) -> int:
        return choice_answer_tokens(request.choices) if request.choices else request.sampling.max_tokens

    def _sampling_params(self, request: ChatRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        sampling = request.sampling
        structured, logprobs = None, None
        if request.json_schema is not None:
            structured = StructuredOutputsParams(json=request.json_schema)
        elif request.choices:
            structured = StructuredOutputsParams(choice=list(request.choices))
            logprobs = min(TOP_LOGPROBS, len(request.choices))
        return SamplingParams(
            # vLLM refuses n > 1 at temperature 0; the one greedy answer is copied n times in _complete.
            n=sampling.n if sampling.temperature > 0 else 1, temperature=sampling.temperature,
            top_p=sampling.top_p, max_tokens=self._answer_tokens(request),
            repetition_penalty=sampling.repetition_penalty, seed=sampling.seed, structured_outputs=structured,
            logprobs=logprobs,
        )

    def _run(self, batch: list[tuple[ChatRequest, list[int]]]) -> list[Any]:
        """vLLM's output per request, or the exception that request alone raised."""
        if not batch:
            return []
        try:
            return self._vllm_generate(batch)
        except Exception:  # vLLM validates requests as it adds them: find the ones it refuses
            return [self._run_alone(item) for item in batch]

    def _run_alone(self, item: tuple[ChatRequest, list[int]]) -> Any:
        try:
            return self._vllm_generate([item])[0]
        except Exception as error:
            return error

    def _vllm_generate(self, batch: list[tuple[ChatRequest, list[int]]]) -> list[Any]:
        from vllm.inputs import TokensPrompt

        return self.llm.generate([TokensPrompt(prompt_token_ids=ids) for _, ids in batch],
                                 sampling_params=[self._sampling_params(request) for request, _ in batch],
                                 use_tqdm=False)

    def _complete(self, request: ChatRequest, output: Any, latency: float) -> Completion:
        if isinstance(output, Exception):
            return Completion.failed(f"vLLM refused the request: {type(output).__name__}: {output}"[:500], latency)
        choices = tuple(self._choice(request, sample) for sample in output.outputs)
        if request.sampling.temperature == 0:
            choices = choices * request.sampling.n
        completion = Completion(choices=choices, prompt_tokens=len(output.prompt_token_ids or ()), latency_s=latency)
        if request.choices and any(choice.choice_logprobs is None for choice in choices):
            return Completion.failed(f"the constrained answer {choices[0].text[:80]!r} is not a whole label", latency)
        return completion

    def _choice(self, request: ChatRequest, sample: Any) -> Choice:
        text, distribution = sample.text, None
        if request.choices:
            steps: list[Step] = [
                (top[token].decoded_token or "", top[token].logprob,
                 [(entry.decoded_token or "", entry.logprob) for entry in top.values()])
                for token, top in zip(sample.token_ids, sample.logprobs or (), strict=True)
            ]
            distribution = label_logprobs(request.choices, steps)
            text = most_probable_at_temperature_zero(request, text, distribution)
        return Choice(text=text, finish_reason=FINISH_REASONS.get(sample.finish_reason or "", "error"),
                      completion_tokens=len(sample.token_ids), choice_logprobs=distribution)

    def close(self) -> None:
        """Free the GPU for the next stage: stop the engine core, drop the model, tear down
        vLLM's distributed state and empty the CUDA cache."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()
        self.llm = None
        del llm
        gc.collect()
        try:
            from vllm.distributed import cleanup_dist_env_and_memory
        except ImportError:  # vLLM before cleanup_dist_env_and_memory existed
            from vllm.distributed import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        else:
            cleanup_dist_env_and_memory()
