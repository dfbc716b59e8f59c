"""Classifier accuracy on hand-labelled prompt sets.

    python -m bench.classifier_accuracy            # every set; SmolLM2 on the two small ones (minutes on 2 cores)
    python -m bench.classifier_accuracy --classifier minilm-embedding  # every set, MiniLM only (seconds)
    python -m bench.classifier_accuracy --quick    # 10 prompts per set, MiniLM only (CI smoke test)

Compares the packaged all-MiniLM-L6-v2 embedding classifier (the local profile's) with
SmolLM2-135M-Instruct label scoring, both through the pipeline's own path
(`tasks.stage1.classify.classify_texts`). Labelled sets, all written for this project and never
copied from a dataset: `data/samples/labelled_safety.jsonl` (14 safety domains + None),
`data/samples/labelled_cultural.jsonl` (30 CULTURAX subdomains + None), and 402 CULTURAX prompts
(13 per subdomain + 12 None) split by a seeded shuffle into `labelled_culturax_dev.jsonl` (6 per
label; the embedding temperature and the taxonomy's label texts were tuned on it) and
`labelled_culturax_test.jsonl` (7 per label, held out). The taxonomy's written examples, which
build the embedding prototypes, are in no set.

Classification runs once at threshold 0.0, so every prompt gets its top-1 label and that
label's probability; a prompt is decided at delta when the probability reaches delta, exactly
as `tasks.stage1.classify.decide` would rule at that threshold. Reports top-1 accuracy, the
majority-class baseline (the largest label's share of the set), macro-F1, accuracy among
decided prompts and the Unknown rate at the spec's delta and at 0.3, seconds and prompts/s
(model load excluded). Where the taxonomy carries the authors' per-class counts (CULTURAX),
per-label accuracy is also weighted by those counts (`class_mix_top1_accuracy`, the expected
top-1 on the real class mix, if real prompts of a class look like the written ones) next to
that mix's majority baseline (`class_mix_majority_baseline`: Festivals, 387 of 1,500).

Results are printed and written to bench/results/classifier_accuracy.json. A run over the
full sets also writes the held-out sets' figures to data/classifier_accuracy.json, from which a
build's card states its classifier's accuracy (`tasks.stage1.measured_accuracy`); only MiniLM
runs on the held-out sets, so `--classifier minilm-embedding` refreshes them in seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from schemas.manifest import ClassifierAccuracy
from schemas.profile import EngineConfig, Profile
from schemas.taxonomy import all_label_texts
from tasks.stage1.classify import LabelDecision, classify_texts
from tasks.config import DATA_DIR, PROJECT_ROOT, PROMPTS_DIR, load_spec, model_sha, taxonomies_for
from tasks.core import StepContext
from tasks.engines import create_engine
from tasks.prompts import PromptLibrary
from tasks.stage1.measured_accuracy import MEASUREMENTS_PATH, engine_name, write_measurements

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see bench/engine_overhead.py

RESULTS_DIR = Path(__file__).parent / "results"
# labelled set -> (spec that classifies into its taxonomy, dimension, labelled prompts)
SETS = {
    "safety": ("demo_safetybench", "safety", DATA_DIR / "samples" / "labelled_safety.jsonl"),
    "culturax": ("culturax", "cultural", DATA_DIR / "samples" / "labelled_cultural.jsonl"),
    "culturax-dev": ("culturax", "cultural", DATA_DIR / "samples" / "labelled_culturax_dev.jsonl"),
    "culturax-test": ("culturax", "cultural", DATA_DIR / "samples" / "labelled_culturax_test.jsonl"),
}
LLM_SETS = ("safety", "culturax")  # SmolLM2 label scoring takes minutes per 60 prompts: the small sets only
HELD_OUT_SETS = ("culturax-test",)  # tuned on nothing: their figures are the ones a card may state
EMBEDDING_CLASSIFIER = "minilm-embedding"  # seconds per set: runs on every set
CLASSIFIERS = {
    EMBEDDING_CLASSIFIER: EngineConfig(backend="embedding", model="packaged:minilm"),
    # Batch 2: label scoring keeps one KV-cache row per (prompt, label) pair of a ~1-2k-token
    # prompt; at the default 8, CULTURAX's 31 labels need more than 20 GB.
    "smollm2-135m-scoring": EngineConfig(backend="transformers", model="packaged:smollm2", device="cpu",
                                         batch_size=2),
}
LOW_DELTA = 0.3  # the local profile's classification_threshold
QUICK_PROMPTS = 10  # the files interleave labels, so the first 10 prompts have 10 labels


def load_labelled(path: Path, limit: int | None) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit]


def context_for(spec_name: str, engine_config: EngineConfig) -> StepContext:
    """A StepContext for `spec_name` whose classifier is `engine_config`, at threshold 0.0 (top-1)."""
    spec = load_spec(spec_name)
    spec = spec.model_copy(update={"classification": spec.classification.model_copy(update={"threshold": 0.0})})
    taxonomies = taxonomies_for(spec)
    engine = create_engine(engine_config, spec.models.classifier, cache_path=None,
                           label_descriptions=all_label_texts(taxonomies.values()))
    profile = Profile(name="bench", description="classifier accuracy benchmark", default_engine=engine_config)
    return StepContext(spec=spec, profile=profile, taxonomies=taxonomies, prompts=PromptLibrary(PROMPTS_DIR),
                       engines=lambda role, model: engine, logger=logging.getLogger("bench"))


def macro_f1(gold: list[str], predicted: list[str]) -> float:
    scores = []
    for label in sorted(set(gold) | set(predicted)):
        true_positive = sum(g == p == label for g, p in zip(gold, predicted))
        support, claimed = gold.count(label), predicted.count(label)
        scores.append(2 * true_positive / (support + claimed))
    return sum(scores) / len(scores)


def class_mix_accuracy(gold: list[str], predicted: list[str], counts: dict[str, int]) -> dict[str, float]:
    """Top-1 on the authors' class mix: per-label accuracy weighted by the published counts
    (labels the set lacks drop out of the weights), and that mix's majority baseline."""
    accuracy = {label: sum(g == p for g, p in zip(gold, predicted) if g == label) / gold.count(label)
                for label in counts if label in gold}
    total = sum(counts[label] for label in accuracy)
    return {"class_mix_top1_accuracy": sum(counts[label] * a for label, a in accuracy.items()) / total,
            "class_mix_majority_baseline": max(counts.values()) / sum(counts.values())}


def metrics(gold: list[str], decisions: list[LabelDecision], deltas: tuple[float, ...],
            counts: dict[str, int] | None = None) -> dict[str, Any]:
    predicted = [d.label for d in decisions]
    row: dict[str, Any] = {
        "n": len(gold),
        "top1_accuracy": sum(g == p for g, p in zip(gold, predicted)) / len(gold),
        "majority_baseline": max(gold.count(label) for label in set(gold)) / len(gold),
        "macro_f1": macro_f1(gold, predicted),
    }
    if counts:
        row.update(class_mix_accuracy(gold, predicted, counts))
    for delta in deltas:
        decided = [g == d.label for g, d in zip(gold, decisions) if d.score is not None and d.score >= delta]
        row[f"decided_accuracy@{delta}"] = sum(decided) / len(decided) if decided else None
        row[f"unknown_rate@{delta}"] = 1 - len(decided) / len(gold)
    return row


def run(labelled_set: str, classifier: str, limit: int | None) -> dict[str, Any]:
    spec_name, dimension, path = SETS[labelled_set]
    rows = load_labelled(path, limit)
    started = time.perf_counter()
    context = context_for(spec_name, CLASSIFIERS[classifier])
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    decisions = classify_texts([r["text"] for r in rows], dimension, context)
    seconds = time.perf_counter() - started
    context.engine("classifier").close()
    deltas = (load_spec(spec_name).classification.threshold, LOW_DELTA)
    counts = {d.name: d.paper_count for d in context.taxonomies[dimension].domains if d.paper_count}
    return {"set": labelled_set, "classifier": classifier,
            **metrics([r["label"] for r in rows], decisions, deltas, counts),
            "seconds": seconds, "prompts_per_second": len(rows) / seconds, "load_seconds": load_seconds}


def held_out_measurements(results: list[dict[str, Any]]) -> list[ClassifierAccuracy]:
    """The figures of the held-out sets, in the form a build looks them up (engine, taxonomy text)."""
    measurements = []
    for row in results:
        if row["set"] not in HELD_OUT_SETS:
            continue
        spec_name, dimension, path = SETS[row["set"]]
        spec = load_spec(spec_name)
        taxonomy = taxonomies_for(spec)[dimension]
        measurements.append(ClassifierAccuracy(
            engine=engine_name(CLASSIFIERS[row["classifier"]], spec.models.classifier),
            taxonomy=taxonomy.name, taxonomy_sha256=model_sha(taxonomy),
            labelled_set=path.relative_to(PROJECT_ROOT).as_posix(), prompts=row["n"],
            top1_accuracy=round(row["top1_accuracy"], 4), majority_baseline=round(row["majority_baseline"], 4),
            class_mix_top1_accuracy=_rounded(row.get("class_mix_top1_accuracy")),
            class_mix_majority_baseline=_rounded(row.get("class_mix_majority_baseline")),
        ))
    return measurements


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def table_line(row: dict[str, Any], header: bool = False) -> str:
    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    return " | ".join(key if header else cell(value) for key, value in row.items() if key != "load_seconds")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 prompts per set, embedding classifier only")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "classifier_accuracy.json")
    parser.add_argument("--measurements", type=Path, default=MEASUREMENTS_PATH,
                        help="where a full run writes the held-out figures that cards state")
    parser.add_argument("--classifier", action="append", choices=list(CLASSIFIERS),
                        help="run only this classifier (repeatable; default: all, or MiniLM with --quick)")
    args = parser.parse_args(argv)
    limit = QUICK_PROMPTS if args.quick else None
    classifiers = args.classifier or ([EMBEDDING_CLASSIFIER] if args.quick else list(CLASSIFIERS))
    results = []
    for labelled_set in SETS:
        for classifier in classifiers:
            if classifier != EMBEDDING_CLASSIFIER and labelled_set not in LLM_SETS:
                continue
            results.append(run(labelled_set, classifier, limit))
            if len(results) == 1 or results[-1].keys() != results[-2].keys():
                print(table_line(results[-1], header=True))
            print(table_line(results[-1]), flush=True)  # the full run takes minutes: show rows as they finish
    report = {"quick": args.quick, "results": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    if not args.quick:  # 10 prompts per set measure nothing a card should state
        write_measurements(held_out_measurements(results), args.measurements)
    return report


if __name__ == "__main__":
    main()
