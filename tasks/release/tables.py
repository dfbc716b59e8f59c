"""Assembly of the published configs from a build's final tables (pure: tables in, tables out).

- ``hhh`` (CULTURAX) ``default``: one row per (prompt, generator) -- one per prompt with
  the usual single generator -- with the authors' columns first (`question`, `class`,
  `domain`, `helpful_response`, `harmless_response`, `honest_response`, `simhash`,
  `pass_hhh`), then scores, response ids, labels and provenance.
- ``aligned_misaligned`` (SAVACU, MISALIGNTRADE) ``default``: one row per (prompt,
  generator) with the prompt, every dimension's labels, `aligned_response`,
  `misaligned_response`, scores and provenance.
- both generating modes also publish ``responses``: every candidate of a published prompt
  (the long table, `passed` marks the selected ones), for audits and reward modelling.
- ``raters`` (Demo-SafetyBench) ``default``: one row per (conversation, human rater) --
  the annotations joined to the conversation's labels; ``llm_ratings``: one row per
  (conversation, rater model).

Responses are joined by prompt id and checked against the prompt text's digest before
anything is assembled, so no response can sit on another prompt's row. Rows are ordered
by prompt id, then the spec's generator / target / rater order, so a release is
byte-stable for the same inputs.

Every model column (`generator_model`, `expansion_model`, `rater_model`: the id the spec
names, the papers' model) has an `_engine` twin naming what produced the row
(`backend:model@revision`, e.g. the packaged SmolLM2 standing in for Llama-3.1-8B on CPU).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from schemas.profile import Profile
from schemas.records import MODEL_COLUMNS, TEXT_COLUMN, engine_column
from schemas.spec import DatasetSpec
from tasks.stage1.sources import kept_column_names
from tasks.stage2.respond import check_response_integrity, responses_of

MAX_LISTED_PROBLEMS = 10


class ReleaseIntegrityError(ValueError):
    """The responses do not match the prompts they claim to answer."""


def rating_release(prompts: pa.Table, side: Mapping[str, pa.Table], spec: DatasetSpec) -> dict[str, pa.Table]:
    """LLMs as raters: the human ratings with the conversations' labels, and the LLMs' ratings."""
    return {"default": human_rating_rows(prompts, _required(side.get("annotations"), "annotations"), spec),
            "llm_ratings": llm_rating_rows(prompts, _required(side.get("ratings"), "ratings"), spec)}


def response_release(prompts: pa.Table, side: Mapping[str, pa.Table], spec: DatasetSpec, *,
                     joint_pass: str | None = None) -> dict[str, pa.Table]:
    """Generated responses: a row per prompt and generator with each target's response, and
    every candidate in long form; `prompts` are the build's final prompts. With `joint_pass`
    (CULTURAX's "hhh"), the targets pass together and the authors' column layout is used."""
    published = responses_of(prompts, _required(side.get("responses"), "responses"))
    problems = check_response_integrity(prompts, published)
    if problems:
        listed = "; ".join(problems[:MAX_LISTED_PROBLEMS])
        raise ReleaseIntegrityError(f"{len(problems)} response integrity problems: {listed}")
    return {"default": paired_rows(prompts, published, spec, joint_pass),
            "responses": long_responses(prompts, published, spec)}


def engine_ids(spec: DatasetSpec, profile: Profile) -> dict[str, str]:
    """Spec model id -> the engine the profile runs it on, for every model of the spec."""
    roles = spec.models
    models = [roles.classifier, roles.expander, *roles.generators, *([roles.judge] if roles.judge else []), *roles.raters]
    return {model: profile.engine_for(model).engine_id(model) for model in models}


def with_engine_columns(table: pa.Table, engines: Mapping[str, str]) -> pa.Table:
    """Each `X_model` column followed by `X_engine`: the engine behind every row's model."""
    for name in [n for n in table.column_names if n in MODEL_COLUMNS]:
        models = table[name].to_pylist()
        unknown = sorted({m for m in models if m is not None and m not in engines})
        if unknown:
            raise ReleaseIntegrityError(f"column {name}: no engine known for models {unknown}")
        engines_of_rows = pa.array([engines[m] if m is not None else None for m in models], pa.string())
        table = table.add_column(table.column_names.index(name) + 1, engine_column(name), engines_of_rows)
    return table


def _required(table: pa.Table | None, name: str) -> pa.Table:
    if table is None:
        raise ValueError(f"this release needs the {name} table")
    return table


def prompt_columns(prompts: pa.Table, spec: DatasetSpec) -> list[str]:
    """The prompt columns a release carries: ids, labels, kept source columns, provenance."""
    dimension_columns = [f"{d.name}_{part}" for d in spec.dimensions for part in ("label", "id", "score", "labels")]
    provenance = ["origin", "source_id", "source_row", "parent_ids", "generator_model", "expansion_round", "simhash"]
    kept = kept_column_names(spec)
    wanted = ["prompt_id", "text", *dimension_columns, *(kept[name] for name in spec.source.keep_columns), *provenance,
              "split"]
    return [name for name in wanted if name in prompts.column_names]


def _prompt_block(prompts: pa.Table, indices: Sequence[int], spec: DatasetSpec, renames: dict[str, str],
                  drop: Sequence[str] = ()) -> pa.Table:
    """The release's prompt columns for the given prompt rows (list and uint64 types kept).
    A prompt's `generator_model` (the expansion model) becomes `expansion_model`, so it never
    reads as the model that wrote the responses."""
    renames = {"generator_model": "expansion_model", **renames}
    names = [n for n in prompt_columns(prompts, spec) if n not in drop]
    block = prompts.select(names).take(pa.array(indices, pa.int64()))
    return block.rename_columns([renames.get(n, n) for n in names])


def _prompt_order(prompts: pa.Table) -> list[int]:
    return pc.sort_indices(prompts, [("prompt_id", "ascending")]).to_pylist()


def _joined(block: pa.Table, columns: dict[str, pa.Array], first: Sequence[str]) -> pa.Table:
    """`columns` added to `block`, with the `first` names leading."""
    for name, values in columns.items():
        block = block.append_column(name, values)
    return block.select([*first, *[n for n in block.column_names if n not in first]])


def paired_rows(prompts: pa.Table, responses: pa.Table, spec: DatasetSpec, joint_pass: str | None = None) -> pa.Table:
    """One row per (prompt, generator) with each target's selected response side by side."""
    targets, generators = spec.responses.targets, spec.models.generators
    threshold = spec.responses.judge_threshold
    selected = {
        (r["prompt_id"], r["generator_model"], r["target"]): r
        for r in responses.filter(pc.equal(responses["passed"], True)).select(
            ["prompt_id", "generator_model", "target", "response_id", "text", "judge_score"]).to_pylist()
    }
    order = [(index, generator) for index in _prompt_order(prompts) for generator in generators]
    prompt_ids = prompts["prompt_id"].to_pylist()
    picks = [[selected.get((prompt_ids[index], generator, target)) for target in targets] for index, generator in order]

    columns: dict[str, pa.Array] = {"generator_model": pa.array([g for _, g in order], pa.string())}
    passes = []
    for position, target in enumerate(targets):
        column = [row[position] for row in picks]
        passes.append([bool(p and p["judge_score"] >= threshold) for p in column])
        columns[f"{target}_response"] = pa.array([p["text"] if p else None for p in column], pa.string())
        columns[f"{target}_score"] = pa.array([p["judge_score"] if p else None for p in column], pa.float64())
        columns[f"pass_{target}"] = pa.array(passes[-1], pa.bool_())
        columns[f"{target}_response_id"] = pa.array([p["response_id"] if p else None for p in column], pa.string())

    if joint_pass:
        primary = spec.dimensions[0].name  # CULTURAX: the cultural subdomain
        columns[f"pass_{joint_pass}"] = pa.array([all(flags) for flags in zip(*passes)], pa.bool_())
        renames = {"text": TEXT_COLUMN["hhh"], f"{primary}_id": "class", f"{primary}_label": "domain"}
        first = ["question", "class", "domain", *[f"{t}_response" for t in targets], "simhash", f"pass_{joint_pass}",
                 "prompt_id", "generator_model"]
    else:
        renames = {"text": TEXT_COLUMN["aligned_misaligned"]}
        first = ["prompt_id", TEXT_COLUMN["aligned_misaligned"], "generator_model", *[f"{t}_response" for t in targets]]
    block = _prompt_block(prompts, [index for index, _ in order], spec, renames)
    return _joined(block, columns, [name for name in first if name in block.column_names or name in columns])


def long_responses(prompts: pa.Table, responses: pa.Table, spec: DatasetSpec) -> pa.Table:
    """Every candidate of the published prompts, with the prompt's split where it has one."""
    generator_rank = {g: i for i, g in enumerate(spec.models.generators)}
    target_rank = {t: i for i, t in enumerate(spec.responses.targets)}
    keys = [(r["prompt_id"], generator_rank.get(r["generator_model"], len(generator_rank)),
             target_rank.get(r["target"], len(target_rank)), r["attempt"])
            for r in responses.select(["prompt_id", "generator_model", "target", "attempt"]).to_pylist()]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    ordered = responses.take(pa.array(order, pa.int64()))
    if "split" in prompts.column_names:
        positions = pc.index_in(ordered["prompt_id"], value_set=prompts["prompt_id"])
        ordered = ordered.append_column("split", prompts["split"].take(positions))
    return ordered


def human_rating_rows(prompts: pa.Table, annotations: pa.Table, spec: DatasetSpec) -> pa.Table:
    """One row per (conversation, human rater): the annotations with the conversation's labels."""
    positions = pc.index_in(annotations["prompt_id"], value_set=prompts["prompt_id"]).to_pylist()
    prompt_ids = annotations["prompt_id"].to_pylist()
    source_rows = annotations["source_row"].to_pylist()
    order = sorted((i for i, p in enumerate(positions) if p is not None), key=lambda i: (prompt_ids[i], source_rows[i]))
    rows = annotations.take(pa.array(order, pa.int64())).drop_columns(["prompt_id"])
    # The annotation's own source_row (one per rater) replaces the conversation's first row.
    block = _prompt_block(prompts, [positions[i] for i in order], spec, {"text": TEXT_COLUMN["raters"]},
                          drop=["source_row"])
    return _joined(block, {name: rows[name] for name in rows.column_names}, ["prompt_id", TEXT_COLUMN["raters"]])


def llm_rating_rows(prompts: pa.Table, ratings: pa.Table, spec: DatasetSpec) -> pa.Table:
    """One row per (conversation, rater model): the model's rating with the conversation's labels."""
    rater_rank = {r: i for i, r in enumerate(spec.models.raters)}
    positions = pc.index_in(ratings["prompt_id"], value_set=prompts["prompt_id"]).to_pylist()
    keys = ratings.select(["prompt_id", "rater_model"]).to_pylist()
    order = sorted((i for i, p in enumerate(positions) if p is not None),
                   key=lambda i: (keys[i]["prompt_id"], rater_rank.get(keys[i]["rater_model"], len(rater_rank))))
    rows = ratings.take(pa.array(order, pa.int64())).drop_columns(["prompt_id", "domain"])
    block = _prompt_block(prompts, [positions[i] for i in order], spec, {"text": TEXT_COLUMN["raters"]})
    first = ["prompt_id", TEXT_COLUMN["raters"], "rater_model", "rating"]
    return _joined(block, {name: rows[name] for name in rows.column_names}, first)
