"""Stage I, step 4: expand low-resource domains by generation.

For every domain below the spec's target (papers' release: at least 100 unique prompts),
the expander writes new prompts seeded with real prompts of that domain (few-shot).
Each generated prompt is reclassified (it must land in the domain it was made for),
fingerprinted, and deduplicated (the dedup step's rule, on fingerprints and words) against
everything kept so far and the round's other generations. Rounds repeat until
every target is met or the round bound is spent; the outcome per domain goes to the
manifest.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from schemas.manifest import ExpansionOutcome
from schemas.records import ORIGIN_EXPANSION
from tasks.stage1.classify import classify_texts
from tasks.core import StepContext, StepResult, concat, make_rejects, request_seed, stable_id
from tasks.dedup.fingerprint import hamming
from tasks.dedup.index import cluster_keep
from tasks.dedup.near_duplicates import Fingerprinter, verify_rule
from tasks.dedup.verify import nearest_verified, verified_pairs
from tasks.engines.base import ChatRequest

TEMPLATE = "expand"
_LIST_MARKER = re.compile(r"^\s*(?:[-*•]|\d+[.)]|prompt\s*\d*\s*:|new prompt\s*:)\s*", re.IGNORECASE)


def deficits(labels: list[str], domain_names: list[str], target: int) -> dict[str, int]:
    """How many prompts each domain lacks to reach the target (domains at target are absent)."""
    counts = Counter(labels)
    return {name: target - counts[name] for name in domain_names if counts[name] < target}


def clean_generated(text: str) -> str | None:
    """The first usable line of a generation, without list markers or quotes."""
    for line in text.strip().splitlines():
        previous = None
        while previous != line:  # markers nest: "- Prompt 2: ..."
            previous, line = line, _LIST_MARKER.sub("", line).strip().strip('"“”\'').strip()
        if len(line.split()) >= 3:
            return line
    return None


def expand_domains(table: pa.Table, context: StepContext) -> StepResult:
    """Top up every domain below target; kept = the prompts in plus the accepted generations
    (`added`), each generation accounted for as a candidate; outcomes per domain in `details`."""
    fingerprinter: Fingerprinter = context.fingerprinter
    spec = context.spec.expansion
    dimension = spec.dimension
    taxonomy = context.taxonomies[dimension]
    target = spec.target_per_domain
    max_rounds = spec.max_rounds if spec.enabled else 0
    domains = [name for name in taxonomy.domain_names if name not in spec.skip_labels]
    before = Counter(table[f"{dimension}_label"].to_pylist())
    rounds_used: Counter[str] = Counter()
    generated_per_domain: Counter[str] = Counter()
    accepted_per_domain: Counter[str] = Counter()
    all_rejects: list[dict[str, Any]] = []
    stats: Counter[str] = Counter()

    for round_number in range(1, max_rounds + 1):
        missing = deficits(table[f"{dimension}_label"].to_pylist(), domains, target)
        if not missing:
            break
        candidates = _generate(table, missing, round_number, context)
        stats["generated"] += len(candidates)
        for row in candidates:
            generated_per_domain[row["_domain"]] += 1
            rounds_used[row["_domain"]] = round_number
        accepted, rejects = _screen(candidates, table, missing, context, fingerprinter)
        all_rejects.extend(rejects)
        for row in accepted:
            accepted_per_domain[row[f"{dimension}_label"]] += 1
        stats["accepted"] += len(accepted)
        if accepted:
            table = concat([table, pa.Table.from_pylist(accepted, schema=table.schema)], schema=table.schema)

    after = Counter(table[f"{dimension}_label"].to_pylist())
    outcomes = [
        ExpansionOutcome(domain=name, target=target, before=before[name], reached=after[name], rounds=rounds_used[name],
                         generated=generated_per_domain[name], accepted=accepted_per_domain[name],
                         met=after[name] >= target)
        for name in domains if before[name] < target
    ]
    stats["domains_below_target"] = len(outcomes)
    stats["domains_unmet"] = sum(not o.met for o in outcomes)
    accepted = int(stats["accepted"])
    return StepResult(kept=table, rejects=make_rejects(all_rejects), stats=dict(stats), added=accepted,
                      candidates_generated=int(stats["generated"]), candidates_kept=accepted,
                      details={"outcomes": [o.model_dump() for o in outcomes]})


def _generate(table: pa.Table, missing: dict[str, int], round_number: int, context: StepContext) -> list[dict[str, Any]]:
    spec = context.spec.expansion
    dimension = spec.dimension
    taxonomy = context.taxonomies[dimension]
    template = context.prompts.get(TEMPLATE)
    by_domain: dict[str, list[tuple[str, str]]] = {}
    for prompt_id, text, label in zip(table["prompt_id"].to_pylist(), table["text"].to_pylist(),
                                      table[f"{dimension}_label"].to_pylist(), strict=True):
        by_domain.setdefault(label, []).append((prompt_id, text))

    plans: list[tuple[str, int, list[tuple[str, str]]]] = []
    for domain_name, need in sorted(missing.items()):
        pool = sorted(by_domain.get(domain_name, []))
        rng = random.Random(request_seed(context.seed, domain_name, round_number))
        for index in range(math.ceil(need * spec.oversample)):
            shots = rng.sample(pool, min(spec.few_shot, len(pool))) if pool else []
            plans.append((domain_name, index, shots))

    requests = []
    for domain_name, index, shots in plans:
        domain = taxonomy.domain(domain_name)
        examples = [text for _, text in shots] or list(domain.examples)
        requests.append(ChatRequest(
            messages=template.render(domain_name=domain.name, dimension=dimension, domain_description=domain.description,
                                     examples=examples),
            sampling=spec.sampling.model_copy(update={"seed": request_seed(context.seed, domain_name, round_number, index)}),
        ))
    completions = context.engine("expander").generate(requests)
    model = context.spec.models.expander
    rows = []
    for (domain_name, index, shots), completion in zip(plans, completions, strict=True):
        raw = completion.text if completion.ok else ""
        rows.append({
            "_domain": domain_name, "_raw": raw, "_error": completion.error,
            "_finish": completion.choices[0].finish_reason if completion.ok else "error",
            "prompt_id": stable_id("expansion", context.spec.name, domain_name, round_number, index, raw),
            "parent_ids": [prompt_id for prompt_id, _ in shots], "generator_model": model,
            "expansion_round": round_number,
        })
    return rows


def _screen(candidates: list[dict[str, Any]], table: pa.Table, missing: dict[str, int], context: StepContext,
            fingerprinter: Fingerprinter) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Clean, reclassify, deduplicate and cap one round's generations."""
    dimension = context.spec.expansion.dimension
    rejects: list[dict[str, Any]] = []

    def reject(row: dict[str, Any], reason: str, detail: str, related: str | None = None) -> None:
        rejects.append({"record_id": row["prompt_id"], "unit": "candidate", "stage": "expand", "reason": reason,
                        "detail": detail, "related_id": related, "text": (row.get("text") or row["_raw"])[:200]})

    usable = []
    for row in candidates:
        text = clean_generated(row["_raw"]) if row["_error"] is None else None
        if row["_error"] is not None:
            reject(row, "engine_error", row["_error"][:200])
        elif text is None:
            reject(row, "unusable_generation", "no line of at least three words")
        else:
            usable.append({**row, "text": text})
    if not usable:
        return [], rejects

    texts = [row["text"] for row in usable]
    for name in context.taxonomies:
        for row, decision in zip(usable, classify_texts(texts, name, context), strict=True):
            row.update({f"{name}_label": decision.label, f"{name}_id": decision.label_id, f"{name}_score": decision.score,
                        f"{name}_labels": list(decision.labels), f"{name}_raw": decision.raw})
    on_domain = []
    for row in usable:
        if row[f"{dimension}_label"] != row["_domain"]:
            reject(row, "off_domain", f"made for {row['_domain']}, classified {row[f'{dimension}_label']}")
        else:
            on_domain.append(row)

    texts = [row["text"] for row in on_domain]
    fingerprints = fingerprinter(texts)
    rule = verify_rule(context.spec.dedup)
    kept_fingerprints = table["simhash"].to_numpy(zero_copy_only=False).astype(np.uint64)
    nearest, words_apart = nearest_verified(texts, table["text"].to_pylist(), fingerprints, kept_fingerprints, rule,
                                            seed=context.seed)
    kept_ids = table["prompt_id"].to_pylist()
    pairs, _ = verified_pairs(texts, fingerprints, rule, seed=context.seed)
    representative = cluster_keep(len(on_domain), pairs, np.arange(len(on_domain)))

    accepted = []
    quota = dict(missing)
    for i, row in enumerate(on_domain):
        row["simhash"] = int(fingerprints[i])
        if nearest[i] >= 0:
            bits_apart = int(hamming(fingerprints[i], kept_fingerprints[nearest[i]]))
            reject(row, "near_duplicate", f"word-bag distance {int(words_apart[i])}, simhash hamming {bits_apart} "
                   "to a kept prompt", kept_ids[nearest[i]])
        elif representative[i] != i:
            reject(row, "near_duplicate", "near-duplicate of another generation", on_domain[representative[i]]["prompt_id"])
        elif quota[row["_domain"]] <= 0:
            reject(row, "over_target", f"{row['_domain']} reached its target this round")
        else:
            quota[row["_domain"]] -= 1
            accepted.append(_prompt_row(row, table.schema))
    return accepted, rejects


def _prompt_row(row: dict[str, Any], schema: pa.Schema) -> dict[str, Any]:
    values = {name: row.get(name) for name in schema.names}
    values.update({"origin": ORIGIN_EXPANSION, "source_id": None, "source_row": None})
    return values
