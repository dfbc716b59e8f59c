"""The classifier's measured accuracy, kept as data rather than in code.

`python -m bench.classifier_accuracy` scores each classifier on held-out labelled prompts and
writes the figures to data/classifier_accuracy.json. A build looks up the measurement of its
own classifier on its own taxonomies (same engine, same taxonomy text by sha256) and records
it in the manifest, so the card states what was measured and never a figure from another
taxonomy version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from schemas.manifest import ClassifierAccuracy
from schemas.profile import EngineConfig
from schemas.taxonomy import Taxonomy
from tasks.config import DATA_DIR, model_sha

MEASUREMENTS_PATH = DATA_DIR / "classifier_accuracy.json"


def engine_name(config: EngineConfig, spec_model: str) -> str:
    """How a build names the engine that runs `spec_model` (the manifest's models, without revision)."""
    return f"{config.backend}:{config.resolved_model(spec_model)}"


def load_measurements(path: Path = MEASUREMENTS_PATH) -> list[ClassifierAccuracy]:
    if not path.exists():
        return []
    return [ClassifierAccuracy.model_validate(row) for row in json.loads(path.read_text(encoding="utf-8"))]


def write_measurements(measurements: Iterable[ClassifierAccuracy], path: Path = MEASUREMENTS_PATH) -> None:
    rows = [m.model_dump(mode="json") for m in measurements]
    path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


def accuracy_by_dimension(engine: str, taxonomies: Mapping[str, Taxonomy],
                          measurements: Iterable[ClassifierAccuracy]) -> dict[str, ClassifierAccuracy]:
    """Per dimension, the measurement of `engine` on exactly that dimension's taxonomy, where one exists."""
    by_taxonomy = {(m.engine, m.taxonomy, m.taxonomy_sha256): m for m in measurements}
    found = {dimension: by_taxonomy.get((engine, taxonomy.name, model_sha(taxonomy)))
             for dimension, taxonomy in taxonomies.items()}
    return {dimension: measurement for dimension, measurement in found.items() if measurement is not None}
