"""Expansion: deficits, reclassification gate, dedup against kept prompts, round bound."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pyarrow as pa

from schemas.manifest import ExpansionOutcome
from schemas.records import prompt_schema
from tasks.dedup.near_duplicates import Fingerprinter, with_fingerprints
from tasks.engines.scripted import ScriptedEngine
from tasks.core import StepResult
from tasks.stage1.expand import clean_generated, deficits, expand_domains


def outcomes_of(result: StepResult) -> list[ExpansionOutcome]:
    return [ExpansionOutcome.model_validate(o) for o in result.details["outcomes"]]


def test_deficits_only_for_domains_under_target() -> None:
    assert deficits(["A", "A", "B"], ["A", "B", "C"], 2) == {"B": 1, "C": 2}
    assert deficits(["A"] * 5, ["A"], 2) == {}


def test_clean_generated_drops_markers_and_short_lines() -> None:
    assert clean_generated('1. "What festivals mark the harvest in Kerala?"') == "What festivals mark the harvest in Kerala?"
    assert clean_generated("ok\n- Prompt: How do people dance the tango?") == "How do people dance the tango?"
    assert clean_generated("   ") is None


def seed_table(context) -> pa.Table:
    rows = [{"prompt_id": f"p{i}", "text": text, "origin": "source", "parent_ids": [], "cultural_label": label}
            for i, (text, label) in enumerate([
                ("Which dances are performed at weddings in Punjab?", "Dance"),
                ("How do I make fresh pasta without a machine at home?", "Culinary Arts"),
                ("What is the history of flamenco in Andalusia and its guitar music?", "Dance"),
            ])]
    table = pa.Table.from_pylist(rows, schema=prompt_schema(["cultural"]))
    fingerprinter = Fingerprinter.fit(table["text"].to_pylist(), context.spec.dedup)
    return with_fingerprints(table, fingerprinter), fingerprinter


def scripted_roles(generations_for):
    """The expander answers per requested domain; the classifier labels by keyword."""
    def expand(request):
        domain = request.messages[-1].content.split("Domain: ", 1)[1].split(" (", 1)[0]
        return next(generations_for.get(domain, OFF_TOPIC))

    def classify(request):
        text = request.messages[-1].content.lower()
        if any(word in text for word in ("dance", "ballet", "tango")):
            return "Dance"
        if any(word in text for word in ("pasta", "bread", "noodle", "dumpling")):
            return "Culinary Arts"
        return "None"

    expander, classifier = ScriptedEngine(expand), ScriptedEngine(classify)
    return lambda role, model: expander if role == "expander" else classifier


OFF_TOPIC = itertools.repeat("Tell me about the weather in Oslo in March please.")


def test_expansion_tops_up_to_target_and_records_every_candidate(context_for) -> None:
    generations = {
        "Dance": iter(["How is ballet taught to young children in Russia today?",
                       "What does a traditional tango evening in Buenos Aires look like?"]),
        "Culinary Arts": iter(["How do I bake sourdough bread with a starter from scratch?",
                               "Which noodle dishes are eaten at Lunar New Year in northern China?"]),
    }
    context = context_for("culturax", scripted_roles(generations))
    context.spec = context.spec.model_copy(update={"expansion": context.spec.expansion.model_copy(
        update={"target_per_domain": 3, "max_rounds": 2, "oversample": 1.0})})
    table, fingerprinter = seed_table(context)
    result = expand_domains(table, replace(context, fingerprinter=fingerprinter))
    labels = result.kept["cultural_label"].to_pylist()
    assert labels.count("Dance") == 3 and labels.count("Culinary Arts") == 3
    generated = result.kept.filter(pa.compute.equal(result.kept["origin"], "expansion"))
    assert generated.num_rows == 3
    assert all(row["generator_model"] == context.spec.models.expander for row in generated.to_pylist())
    assert all(row["parent_ids"] for row in generated.to_pylist() if row["cultural_label"] in ("Dance", "Culinary Arts"))
    assert result.stats["generated"] == result.stats["accepted"] + result.rejects.num_rows
    assert set(result.rejects["unit"].to_pylist()) <= {"candidate"}
    outcomes = {o.domain: o for o in outcomes_of(result)}
    assert outcomes["Dance"].met and outcomes["Culinary Arts"].met
    assert outcomes["Opera"].reached == 0 and not outcomes["Opera"].met


def test_expansion_stops_at_the_round_bound_and_rejects_off_domain(context_for) -> None:
    context = context_for("culturax", scripted_roles({}))
    context.spec = context.spec.model_copy(update={"expansion": context.spec.expansion.model_copy(
        update={"target_per_domain": 2, "max_rounds": 2, "oversample": 1.0})})
    table, fingerprinter = seed_table(context)
    result = expand_domains(table, replace(context, fingerprinter=fingerprinter))
    assert result.kept.num_rows == table.num_rows
    assert set(result.rejects["reason"].to_pylist()) == {"off_domain"}
    assert max(o.rounds for o in outcomes_of(result)) == 2
    assert not any(o.met for o in outcomes_of(result) if o.domain == "Culinary Arts")


def test_near_duplicates_of_kept_prompts_are_dropped(context_for) -> None:
    generations = {"Dance": itertools.repeat("Which dances are performed at weddings in the Punjab?")}
    context = context_for("culturax", scripted_roles(generations))
    context.spec = context.spec.model_copy(update={"expansion": context.spec.expansion.model_copy(
        update={"target_per_domain": 3, "max_rounds": 1, "oversample": 1.0})})
    table, fingerprinter = seed_table(context)
    result = expand_domains(table, replace(context, fingerprinter=fingerprinter))
    reasons = result.rejects.filter(pa.compute.equal(result.rejects["reason"], "near_duplicate"))
    assert reasons.num_rows >= 1
    assert "p0" in reasons["related_id"].to_pylist()
