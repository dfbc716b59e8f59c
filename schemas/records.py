"""Record layouts as pyarrow schemas: what a row is at each point of the pipeline.

Prompt tables carry fixed provenance columns plus, per labelled dimension, the label,
its taxonomy id, its probability and the multi-label set above the threshold. The
column set therefore depends on the spec's dimensions and kept source columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pyarrow as pa

from schemas.spec import DatasetSpec

ORIGIN_SOURCE = "source"
ORIGIN_EXPANSION = "expansion"

_ARROW_TYPES = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}

PROMPT_BASE_FIELDS = [
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("origin", pa.string(), nullable=False),
    pa.field("source_id", pa.string()),
    pa.field("source_row", pa.int64()),
    pa.field("parent_ids", pa.list_(pa.string())),
    pa.field("generator_model", pa.string()),
    pa.field("expansion_round", pa.int32()),
    pa.field("simhash", pa.uint64()),
]


def dimension_fields(dimension: str) -> list[pa.Field]:
    return [
        pa.field(f"{dimension}_label", pa.string()),
        pa.field(f"{dimension}_id", pa.int32()),
        pa.field(f"{dimension}_score", pa.float64()),
        pa.field(f"{dimension}_labels", pa.list_(pa.string())),
        pa.field(f"{dimension}_raw", pa.string()),
    ]


def arrow_type(name: str) -> pa.DataType:
    return _ARROW_TYPES[name]


def prompt_schema(dimensions: Iterable[str], keep_columns: Mapping[str, str] = {}) -> pa.Schema:
    fields = list(PROMPT_BASE_FIELDS)
    for dimension in dimensions:
        fields.extend(dimension_fields(dimension))
    fields.extend(pa.field(name, arrow_type(kind)) for name, kind in keep_columns.items())
    return pa.schema(fields)


REJECT_SCHEMA = pa.schema([
    pa.field("record_id", pa.string(), nullable=False),
    pa.field("unit", pa.string(), nullable=False),  # prompt | candidate | source_row | annotation
    pa.field("stage", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string()),
    pa.field("related_id", pa.string()),  # e.g. the kept duplicate, the train item it leaks into
    pa.field("text", pa.string()),
    pa.field("raw", pa.binary()),  # a source row's bytes, when it left for what its bytes are (encoding, quotes)
])

RESPONSE_SCHEMA = pa.schema([
    pa.field("response_id", pa.string(), nullable=False),
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("prompt_sha", pa.string(), nullable=False),  # digest of the prompt text it answers
    pa.field("target", pa.string(), nullable=False),
    pa.field("generator_model", pa.string(), nullable=False),
    pa.field("template_sha", pa.string(), nullable=False),
    pa.field("attempt", pa.int32(), nullable=False),
    pa.field("feedback_round", pa.int32(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("finish_reason", pa.string()),
    pa.field("completion_tokens", pa.int64()),
    pa.field("judge_score", pa.float64()),
    pa.field("judge_critique", pa.string()),
    pa.field("passed", pa.bool_(), nullable=False),
])

RATING_SCHEMA = pa.schema([
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("rater_model", pa.string(), nullable=False),
    pa.field("domain", pa.string()),
    pa.field("rating", pa.string(), nullable=False),
    pa.field("p_unsafe", pa.float64()),
    pa.field("raw_output", pa.string()),
    pa.field("template_sha", pa.string(), nullable=False),
])


def annotation_schema(columns: Mapping[str, str]) -> pa.Schema:
    fields = [pa.field("prompt_id", pa.string(), nullable=False), pa.field("source_row", pa.int64())]
    fields.extend(pa.field(name, arrow_type(kind)) for name, kind in columns.items())
    return pa.schema(fields)


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


# Columns naming a spec model (the papers' id); each has a twin naming the engine that ran it.
MODEL_COLUMNS = ("generator_model", "expansion_model", "rater_model")


def engine_column(model_column: str) -> str:
    return model_column.removesuffix("_model") + "_engine"


# The prompt text's column in each response mode's default config ("prompt" for other kinds).
TEXT_COLUMN = {"hhh": "question", "aligned_misaligned": "prompt", "raters": "conversation"}
DEFAULT_TEXT_COLUMN = "prompt"
# What a kept source column is renamed to when the release writes a column of its name.
SOURCE_PREFIX = "source_"


def release_columns(spec: DatasetSpec) -> frozenset[str]:
    """Every column the pipeline itself writes into the prompt table or a config of this
    spec's release (`tasks.release.tables`); a kept source column must not take one of these names."""
    mode, targets = spec.responses.mode, spec.responses.targets
    text_column = TEXT_COLUMN.get(mode, DEFAULT_TEXT_COLUMN)
    names = set(prompt_schema([d.name for d in spec.dimensions]).names) | {"split", "expansion_model", text_column}
    if mode == "raters":
        names |= set(annotation_schema({}).names) | set(RATING_SCHEMA.names)
    else:
        names |= {"generator_model", *(f"pass_{t}" for t in targets)}
        names |= {f"{t}_{part}" for t in targets for part in ("response", "score", "response_id")}
    if mode == "hhh":
        names |= {"class", "domain", "pass_hhh"}
    return frozenset(names | {engine_column(name) for name in names if name in MODEL_COLUMNS})
