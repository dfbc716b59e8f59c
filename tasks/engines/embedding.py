"""Zero-shot closed choice by embedding similarity: a cheap classifier with no generation.

The last user message is compared (cosine) with each label's prototype: the normalised mean
embedding of the label's texts, given at construction as `label_descriptions` since a
ChatRequest carries label names only. A label's texts are one description or several (the
build passes "name: description" and the taxonomy's written examples, see
`Taxonomy.label_texts`); a label without texts stands for itself. On the labelled CULTURAX
prompts, prototypes of description and written examples beat the description alone by a wide
margin (bench/README.md). Per-label probabilities are softmax(similarity / 0.034): cosine
similarities of one sentence model vary over a narrow range, and 0.034 is the temperature that
minimised the negative log-likelihood on the labelled dev split, so a label's probability
estimates how often it is right and the spec's threshold delta keeps its meaning. Default
model: the packaged all-MiniLM-L6-v2, offline.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence

import numpy as np

from tasks.engines.base import ChatRequest, Choice, Completion, InProcessEngine
from tasks.engines.choice_scoring import normalise_over_choices
from tasks.engines.packaged import is_packaged, resolve_packaged

SIMILARITY_TEMPERATURE = 0.034
PACKAGED_MINILM = "packaged:minilm"
OPEN_REQUEST_ERROR = "embedding backend only answers closed-choice requests"

LabelTexts = Mapping[str, str | Sequence[str]]


class EmbeddingClassifierEngine(InProcessEngine):
    backend = "embedding"

    def __init__(
        self,
        model_id: str = PACKAGED_MINILM,
        revision: str | None = None,
        *,
        label_descriptions: LabelTexts | None = None,
        device: str = "auto",
        batch_size: int = 64,
    ) -> None:
        super().__init__(model_id, revision)
        from sentence_transformers import SentenceTransformer

        from tasks.engines.transformers_backend import resolve_device

        started = time.perf_counter()
        source, load_revision, local_only = model_id, revision, False
        if is_packaged(model_id):
            folder, self.revision = resolve_packaged(model_id)
            # A packaged model is a local folder: never ask the hub about it.
            source, load_revision, local_only = str(folder), None, True
        self.model = SentenceTransformer(source, revision=load_revision, local_files_only=local_only,
                                         device=resolve_device(device))
        self.label_texts = {label: (texts,) if isinstance(texts, str) else tuple(texts)
                            for label, texts in (label_descriptions or {}).items()}
        self.batch_size = batch_size
        self._label_vectors: dict[str, object] = {}
        self.usage.load_seconds = time.perf_counter() - started

    @property
    def cache_salt(self) -> str:
        """Answers depend on the label texts and the temperature, which requests do not carry."""
        identity = json.dumps([SIMILARITY_TEMPERATURE, sorted(self.label_texts.items())])
        return hashlib.sha256(identity.encode()).hexdigest()[:16]

    def _generate_all(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        started = time.perf_counter()
        closed = [i for i, r in enumerate(requests) if r.choices]
        texts = [next((m.content for m in reversed(requests[i].messages) if m.role == "user"), "") for i in closed]
        vectors = self._encode(texts) if texts else None
        self._remember_labels({label for i in closed for label in requests[i].choices or ()})
        latency = (time.perf_counter() - started) / max(1, len(requests))
        prompt_tokens = [len(ids) for ids in self.model.tokenizer(texts)["input_ids"]] if texts else []
        by_index = {}
        for row, i in enumerate(closed):
            request = requests[i]
            labels = request.choices or ()
            similarity = {label: float(vectors[row] @ self._label_vectors[label]) for label in labels}
            distribution = normalise_over_choices({k: v / SIMILARITY_TEMPERATURE for k, v in similarity.items()})
            best = max(distribution, key=distribution.__getitem__)
            # A deterministic classifier: n samples are n copies of its answer.
            choice = Choice(text=best, finish_reason="stop", completion_tokens=0, choice_logprobs=distribution)
            by_index[i] = Completion(choices=(choice,) * request.sampling.n, prompt_tokens=prompt_tokens[row],
                                     latency_s=latency)
        completions = [
            by_index.get(i) or Completion.failed(OPEN_REQUEST_ERROR if requests[i].choices is None
                                                 else "a closed-choice request needs at least one choice", latency)
            for i in range(len(requests))
        ]
        self.usage.record(completions, time.perf_counter() - started)
        return completions

    def _encode(self, texts: list[str]):  # type: ignore[no-untyped-def]
        return self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)

    def _remember_labels(self, labels: set[str]) -> None:
        """Each new label's prototype: the normalised mean of its texts' embeddings."""
        new = sorted(labels - self._label_vectors.keys())
        if not new:
            return
        texts = {label: self.label_texts.get(label) or (label,) for label in new}
        embeddings = self._encode([text for label in new for text in texts[label]])
        start = 0
        for label in new:
            mean = embeddings[start:start + len(texts[label])].mean(axis=0)
            start += len(texts[label])
            self._label_vectors[label] = mean / np.linalg.norm(mean)

    def close(self) -> None:
        self.model = None
        self._label_vectors.clear()
