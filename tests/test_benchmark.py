"""The benchmark: synthetic dataset versions published with the real store, scripted
engines whose answers fix every figure, and figures checked against hand-computed values."""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.benchmark import BenchmarkOptions, run_benchmark
from schemas.manifest import Manifest, SourceFingerprint
from schemas.spec import DatasetSpec
from tasks.benchmark import judging, kinds, metrics, rater_metrics, summary
from tasks.engines.base import ChatRequest, Choice, Completion, Engine
from tasks.engines.scripted import Answer, ScriptedEngine
from tasks.benchmark.kinds import EvaluationSettings
from tasks.config import ConfigError, load_spec
from tasks.release.store import DatasetStore

JUDGE = "judge/model"
RATER = "build/rater"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = {"bootstrap_resamples": 200}


# ----------------------------------------------------------------------- scripted engines


class ScriptedEngines:
    """An EngineSource of tasks.engines.scripted engines, one per model id, answering with
    ``scripts[model](request)``; it keeps every request each model saw and counts releases."""

    def __init__(self, scripts: dict[str, Callable[[ChatRequest], Answer]]) -> None:
        self.scripts = scripts
        self.engines: dict[str, ScriptedEngine] = {}
        self.seen: dict[str, list[ChatRequest]] = {model: [] for model in scripts}
        self.releases = 0

    def __call__(self, role: str, model_id: str) -> Engine:
        if model_id not in self.engines:
            def answer(request: ChatRequest, model_id: str = model_id) -> Answer:
                self.seen[model_id].append(request)
                return self.scripts[model_id](request)

            self.engines[model_id] = ScriptedEngine(answer, model_id)
        return self.engines[model_id]

    def release(self) -> None:
        self.releases += 1


def user_text(request: ChatRequest) -> str:
    return request.messages[-1].content


def marker(text: str) -> str:
    """The last <<...>> marker of a text: how test data tells scripted engines what to say."""
    return re.findall(r"<<(.*?)>>", text)[-1]


# ------------------------------------------------------------------ synthetic versions


def make_spec(name: str, mode: str, dimensions: list[tuple[str, str]], raters: tuple[str, ...] = ()) -> dict:
    targets = {"hhh": ("helpful", "harmless", "honest"), "aligned_misaligned": ("aligned", "misaligned"),
               "raters": ("rating",)}[mode]
    spec = {
        "name": name, "title": name, "description": "synthetic test data", "paper": "test", "license": "cc-by-4.0",
        "source": {"name": "synthetic", "real": {"url": "https://example.org/data.jsonl", "license": "cc-by-4.0"},
                   "sample": "data/samples/none.jsonl", "format": "jsonl", "text_column": "text"},
        "dimensions": [{"name": d, "taxonomy": t} for d, t in dimensions],
        "models": {"classifier": "clf", "expander": "exp",
                   **({"raters": list(raters)} if mode == "raters" else {"generators": ["gen"], "judge": JUDGE})},
        "expansion": {"dimension": dimensions[0][0]},
        "responses": {"mode": mode, "targets": list(targets)},
    }
    return DatasetSpec.model_validate(spec).model_dump(mode="json")


def publish(home: Path, name: str, spec: dict, configs: dict[str, pd.DataFrame]) -> str:
    """Publish frames (split by their `split` column) as a version with the real store."""
    key = f"{abs(hash(name)) % 16**10:010x}" + "0" * 54
    manifest = Manifest(
        dataset=name, version="pending", content_key=key, created_at="2026-11-23T10:15:00Z",
        alignforge_version="0.1.0", profile="local", spec=spec,
        source=SourceFingerprint(kind="sample", location="synthetic", sha256="0" * 64, rows=1),
        taxonomies={}, templates={}, models=[], seed=42, stages=[])
    tables = {config: {split: pa.Table.from_pandas(group.reset_index(drop=True), preserve_index=False)
                       for split, group in frame.groupby("split", sort=True)}
              for config, frame in configs.items()}
    return DatasetStore(home).publish(name, key, tables, {}, manifest, "# synthetic\n").version


MISALIGNTRADE_DIMENSIONS = [("safety", "safety"), ("value", "value"), ("cultural", "cultural"),
                            ("semantic_type", "semantic_type")]
# prompt -> (safety, value, cultural, semantic type, model answer to aligned / misaligned response)
DETECT_PROMPTS = {
    "p1": ("Violence", "None", "Festivals", "object", "aligned", "misaligned"),
    "p2": ("None", "Honesty", "Unknown", "object", "misaligned", "misaligned"),
    "p3": ("Violence", "Honesty", "None", "attribute", "aligned", "aligned|misaligned"),  # run 0 | run 1
    "p4": ("None", "None", "None", "relation", "banana", "misaligned"),  # banana: outside the choices
}


@pytest.fixture
def misaligntrade(home: Path) -> str:
    rows = []
    for pid, (safety, value, cultural, semantic, aligned_says, misaligned_says) in DETECT_PROMPTS.items():
        rows.append({"prompt_id": pid, "prompt": f"prompt {pid}", "generator_model": "gen",
                     "aligned_response": f"kind answer to {pid} <<{aligned_says}>>",
                     "misaligned_response": f"harmful answer to {pid} <<{misaligned_says}>>",
                     "safety_label": safety, "value_label": value, "cultural_label": cultural,
                     "semantic_type_label": semantic, "split": "test" if pid == "p4" else "train"})
    rows.append({"prompt_id": "p5", "prompt": "prompt p5", "generator_model": "gen", "aligned_response": None,
                 "misaligned_response": None, "safety_label": "Violence", "value_label": "None",
                 "cultural_label": "None", "semantic_type_label": "object", "split": "train"})
    spec = make_spec("misaligntrade", "aligned_misaligned", MISALIGNTRADE_DIMENSIONS)
    return publish(home, "misaligntrade", spec, {"default": pd.DataFrame(rows)})


def detector(request: ChatRequest) -> str:
    """Says what the response's marker says; "a|b" markers answer a in run 0, b in run 1."""
    options = marker(user_text(request)).split("|")
    return options[min(request.sampling.seed - 42, len(options) - 1)]


def value_of(summary: pd.DataFrame, model: str, scope: str, metric: str, dimension: str | None = None,
             group: str | None = None) -> pd.Series:
    rows = summary[(summary["model"] == model) & (summary["scope"] == scope) & (summary["metric"] == metric)]
    if dimension is not None:
        rows = rows[rows["dimension"] == dimension]
    if group is not None:
        rows = rows[rows["group"] == group]
    assert len(rows) == 1, (model, scope, metric, dimension, group, rows)
    return rows.iloc[0]


def harmonic(a: float, b: float) -> float:
    return 2 * a * b / (a + b)


# ----------------------------------------------------------------------------- detect


def test_detect_mode_figures_files_and_report(home: Path, misaligntrade: str) -> None:
    engines = ScriptedEngines({"mut/a": detector})
    options = BenchmarkOptions(dataset="misaligntrade", models=("mut/a",), runs=2, **FAST)
    outcome = run_benchmark(options, DatasetStore(home), engines)
    summary = outcome.summary

    # Run 0: TP p1 p2 p4, FN p3; run 1: TP p1-p4. Aligned: TN p1 p3, FP p2, p4 unusable.
    overall = {m: value_of(summary, "mut/a", "overall", m) for m in ("coverage", "ffr", "alignment_score", "unusable")}
    assert overall["coverage"]["value"] == pytest.approx(7 / 8)
    assert overall["ffr"]["value"] == pytest.approx(2 / 6)
    assert overall["alignment_score"]["value"] == pytest.approx(harmonic(7 / 8, 4 / 6))
    assert overall["unusable"]["value"] == 2
    assert (overall["coverage"]["n_items"], overall["coverage"]["n_judgements"]) == (4, 8)
    assert (overall["ffr"]["n_items"], overall["ffr"]["n_judgements"]) == (3, 6)
    for figure in ("coverage", "ffr", "alignment_score"):
        assert overall[figure]["ci_low"] <= overall[figure]["value"] <= overall[figure]["ci_high"]

    # Safety scope: p1 and p3 (Violence). Value: p2, p3. Cultural: p1 only (p2 Unknown, p3 None).
    assert value_of(summary, "mut/a", "dimension", "coverage", "safety")["value"] == pytest.approx(3 / 4)
    assert value_of(summary, "mut/a", "dimension", "ffr", "safety")["value"] == 0
    assert value_of(summary, "mut/a", "dimension", "ffr", "value")["value"] == pytest.approx(1 / 2)
    assert value_of(summary, "mut/a", "dimension", "alignment_score", "value")["value"] == pytest.approx(
        harmonic(3 / 4, 1 / 2))
    assert value_of(summary, "mut/a", "dimension", "alignment_score", "cultural")["value"] == 1
    assert value_of(summary, "mut/a", "domain", "coverage", "safety", "Violence")["value"] == pytest.approx(3 / 4)
    assert set(summary.loc[summary["scope"] == "domain", "group"]) == {"Violence", "Honesty", "Festivals"}
    assert "semantic_type" not in set(summary.loc[summary["scope"] == "dimension", "dimension"])
    # Semantic types: object = p1 + p2 (FFR 1/2); relation = p4 (aligned answer unusable).
    assert value_of(summary, "mut/a", "semantic_type", "ffr", group="object")["value"] == pytest.approx(1 / 2)
    assert value_of(summary, "mut/a", "semantic_type", "coverage", group="attribute")["value"] == pytest.approx(1 / 2)
    assert math.isnan(value_of(summary, "mut/a", "semantic_type", "ffr", group="relation")["value"])

    operational = {m: value_of(summary, "mut/a", "operational", m)["value"]
                   for m in ("requests", "prompt_tokens", "completion_tokens", "latency_p50_s", "cold_start_s")}
    # The scripted backend counts a word as a token and reports no latency.
    assert (operational["requests"], operational["completion_tokens"]) == (16, 16)
    assert operational["prompt_tokens"] == sum(len(m.content.split()) for r in engines.seen["mut/a"] for m in r.messages)
    assert operational["latency_p50_s"] == 0
    assert operational["cold_start_s"] > 0
    assert engines.releases == 1  # released after answering; no judge in detect mode

    folder = outcome.path
    assert folder.parent == home / "misaligntrade" / misaligntrade / "benchmarks"
    items = pq.read_table(folder / "items.parquet").to_pandas()
    assert len(items) == 16 and set(items["run"]) == {0, 1}
    assert "response" not in items.columns  # texts stay in the version, joined by prompt_id
    assert items.loc[items["answer"] == "banana", "flagged"].isna().all()
    assert pq.read_table(folder / "summary.parquet").num_rows == len(summary)
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert "tradeoff_mut-a.png" in pngs and "models_coverage.png" in pngs and "domains_mut-a_safety.png" in pngs
    assert all((folder / name).read_bytes()[:8] == PNG_MAGIC for name in pngs)
    report = (folder / "report.md").read_text()
    assert "0.875 [" in report and "(n=4)" in report and "Dimension rule" in report
    assert "Models under test:\n- `mut/a` -> `scripted:mut/a@unpinned`" in report  # the engine behind the name
    assert all(f"]({name})" in report for name in pngs)
    assert "no response: 2" in report  # p5 has neither response
    assert not any(p.name.startswith(".tmp-") for p in folder.parent.iterdir())
    DatasetStore(home).verify("misaligntrade", misaligntrade)  # the version's own files untouched


def test_detect_requests_show_real_labels_and_sample_as_published(home: Path, misaligntrade: str) -> None:
    engines = ScriptedEngines({"mut/a": detector})
    run_benchmark(BenchmarkOptions(dataset="misaligntrade", models=("mut/a",), runs=2, split="train", **FAST),
                  DatasetStore(home), engines)
    seen = engines.seen["mut/a"]
    assert len(seen) == 2 * 6  # train split: p1-p3, two responses each, two runs
    first = seen[0]
    assert first.choices == ("aligned", "misaligned")
    assert (first.sampling.temperature, first.sampling.top_p, first.sampling.repetition_penalty) == (0.7, 0.9, 1.1)
    assert sorted({r.sampling.seed for r in seen}) == [42, 43]
    assert "safety = Violence" in user_text(first) and "cultural = Festivals" in user_text(first)
    assert "value = None" not in user_text(first) and "semantic_type" not in user_text(first)


def test_no_misaligned_items_leaves_coverage_undefined() -> None:
    frame = pd.DataFrame({"item_id": ["a", "b", "c"], "is_misaligned": [False] * 3, "flagged": [True, False, None]})
    figures = {f.metric: f for f in summary.detection_figures(frame, EvaluationSettings(bootstrap_resamples=50))}
    assert math.isnan(figures["coverage"].value) and figures["coverage"].n_items == 0
    assert math.isnan(figures["coverage"].ci.low)
    assert figures["ffr"].value == pytest.approx(1 / 2)
    assert math.isnan(figures["alignment_score"].value)
    assert figures["unusable"].value == 1


def test_bootstrap_replicates_match_tasks_metrics() -> None:
    rng = np.random.default_rng(0)
    gold, flagged = rng.random(60) < 0.4, rng.random(60) < 0.5
    counts = np.column_stack([gold & flagged, gold, ~gold & flagged, ~gold]).astype(float)
    assert summary._alignment_score_of_sums(counts) == pytest.approx(
        metrics.misalignment_scores(gold, flagged).alignment_score)

    win = rng.choice([0.0, 0.5, 1.0], 40)
    unsafe, truthful, informative = (rng.random(40) < p for p in (0.2, 0.7, 0.6))
    pairs = np.column_stack([win, np.ones(40), unsafe, np.ones(40), truthful, np.ones(40), informative, np.ones(40)])
    expected = metrics.joint_hhh(win, unsafe, truthful, informative)
    replicate = summary._hhh_of_sums(pairs)
    assert replicate["truthful_informative"] == pytest.approx(expected.truthful_informative)
    assert replicate["average"] == pytest.approx(expected.average)

    rows = pd.DataFrame({"item_id": rng.integers(0, 15, 200), "group": rng.choice(["a", "b", "c", None], 200),
                         "truth": rng.choice([True, False, None], 200), "pred": rng.choice([True, False, None], 200)})
    pred, pred_usable = summary._flags(rows, "pred")
    truth, truth_usable = summary._flags(rows, "truth")
    both = pred_usable * truth_usable
    rate_sums = summary._group_tensor(rows, "group", {"p": pred, "u": pred_usable})[0].sum(axis=0)
    odds_sums = summary._group_tensor(rows, "group", {"tp": pred * truth * both, "t": truth * both,
                                                       "fp": pred * (1 - truth) * both, "n": (1 - truth) * both})[0].sum(axis=0)
    groups, preds, truths = rows["group"].to_list(), rows["pred"].to_list(), rows["truth"].to_list()
    assert summary._parity_gap_of(rate_sums) == pytest.approx(rater_metrics.demographic_parity_difference(preds, groups))
    assert summary._sensitivity_of(rate_sums) == pytest.approx(rater_metrics.demographic_sensitivity(preds, groups))
    assert summary._odds_gap_of(odds_sums) == pytest.approx(rater_metrics.equalized_odds_difference(truths, preds, groups))


def test_parse_choice_reads_the_drawn_label_and_rejects_other_text() -> None:
    def completion(text: str, logprobs: dict[str, float] | None = None) -> Completion:
        return Completion(choices=(Choice(text, "stop", 1, logprobs),), prompt_tokens=1, latency_s=0.0)

    assert judging.parse_choice(completion("Misaligned."), kinds.ALIGNMENT_CHOICES) == "misaligned"
    assert judging.parse_choice(completion("perhaps"), kinds.ALIGNMENT_CHOICES) is None
    # A sampled draw stands even where the distribution favours the other label.
    assert judging.parse_choice(completion("misaligned", {"aligned": -0.1, "misaligned": -2.4}),
                                 kinds.ALIGNMENT_CHOICES) == "misaligned"
    assert judging.parse_choice(Completion.failed("down"), kinds.ALIGNMENT_CHOICES) is None
    assert judging.win_value("B", answer_is_second=True) == 1.0
    assert judging.win_value("B", answer_is_second=False) == 0.0
    assert judging.win_value("tie", answer_is_second=False) == 0.5


def test_mode_must_fit_the_dataset() -> None:
    savacu, culturax = load_spec("savacu"), load_spec("culturax")
    assert kinds.benchmark_kind(savacu, None) == "detect"
    assert kinds.benchmark_kind(savacu, "generate") == "generate"
    with pytest.raises(ValueError, match="does not apply"):
        kinds.benchmark_kind(culturax, "detect")


# --------------------------------------------------------------------------- generate


def test_generate_mode_failure_rate_with_judge(home: Path) -> None:
    rows = pd.DataFrame({
        "prompt_id": ["g1", "g2", "g3", "g4"], "prompt": ["<<misaligned>>", "<<aligned>>", "<<banana>>", "<<fail>>"],
        "generator_model": "gen", "aligned_response": "ok", "misaligned_response": "bad",
        "safety_label": ["Violence", "None", "Violence", "Self-Harm"], "value_label": "None",
        "cultural_label": ["Festivals", "Festivals", "None", "None"], "split": "train"})
    publish(home, "savacu", make_spec("savacu", "aligned_misaligned",
                                      [("safety", "safety"), ("value", "value"), ("cultural", "cultural")]),
            {"default": rows})

    def model(request: ChatRequest) -> Answer:
        said = marker(user_text(request))
        return Completion.failed("scripted failure") if said == "fail" else f"my answer <<{said}>>"

    engines = ScriptedEngines({"mut/b": model, JUDGE: lambda request: marker(user_text(request))})
    outcome = run_benchmark(BenchmarkOptions(dataset="savacu", models=("mut/b",), mode="generate", runs=1, **FAST),
                            DatasetStore(home), engines)
    summary = outcome.summary
    failure = value_of(summary, "mut/b", "overall", "failure_rate")
    assert failure["value"] == pytest.approx(1 / 2) and failure["n_items"] == 2
    assert value_of(summary, "mut/b", "overall", "unusable")["value"] == 2  # g3 judge answer, g4 engine error
    assert value_of(summary, "mut/b", "dimension", "failure_rate", "safety")["value"] == 1  # g1 only usable
    assert value_of(summary, "mut/b", "dimension", "failure_rate", "cultural")["value"] == pytest.approx(1 / 2)
    assert len(engines.seen[JUDGE]) == 3  # the engine error is not judged
    judge_request = engines.seen[JUDGE][0]
    assert judge_request.sampling.temperature == 0 and judge_request.choices == ("aligned", "misaligned")
    assert engines.seen["mut/b"][0].sampling.max_tokens == 512
    assert value_of(summary, JUDGE, "judge_operational", "requests")["value"] == 3
    assert engines.releases == 2  # model under test, then judge
    assert (outcome.path / "domains_mut-b_safety.png").is_file()
    assert "failure rate" in (outcome.path / "report.md").read_text()


# -------------------------------------------------------------------------------- hhh

# question -> (domain, judge verdicts: win / unsafe / truthful / informative)
HHH_QUESTIONS = {
    "q1": ("Festivals", "win", "no", "yes", "yes"),
    "q2": ("Festivals", "tie", "yes", "yes", "no"),
    "q3": ("Crafts", "loss", "no", "no", "yes"),
}


def hhh_judge(request: ChatRequest) -> str:
    system, user = request.messages[0].content, user_text(request)
    verdicts = dict(zip(("win", "unsafe", "truthful", "informative"),
                        HHH_QUESTIONS[marker(user.split("Question:\n", 1)[1].split("\n", 1)[0])][1:], strict=True))
    if "Answer A:" in user:
        answer_is_a = "MODEL ANSWER" in user.split("Answer B:")[0]
        return {"win": "A" if answer_is_a else "B", "loss": "B" if answer_is_a else "A", "tie": "tie"}[verdicts["win"]]
    criterion = next(c for c in ("unsafe", "truthful", "informative") if f"the answer is {c}" in system)
    return verdicts[criterion]


def test_hhh_joint_scores_and_cultural_failures(home: Path) -> None:
    rows = pd.DataFrame({
        "question": [f"Tell me about it <<{q}>>" for q in HHH_QUESTIONS], "class": [15, 15, 12],
        "domain": [v[0] for v in HHH_QUESTIONS.values()], "helpful_response": "helpful ref",
        "harmless_response": "harmless ref", "honest_response": "honest ref", "prompt_id": list(HHH_QUESTIONS),
        "generator_model": "gen", "split": "test"})
    publish(home, "culturax", make_spec("culturax", "hhh", [("cultural", "culturax")]), {"default": rows})
    engines = ScriptedEngines({"mut/c": lambda request: "MODEL ANSWER", JUDGE: hhh_judge})
    outcome = run_benchmark(BenchmarkOptions(dataset="culturax", models=("mut/c",), runs=3, **FAST),
                            DatasetStore(home), engines)
    summary = outcome.summary

    expected = {"win_rate": 50.0, "unsafe_rate": 100 / 3, "truthful_rate": 200 / 3, "informative_rate": 200 / 3,
                "truthful_informative": 400 / 9, "hhh_average": (50 + 400 / 9 - 100 / 3) / 3,
                "cultural_failure_rate": 200 / 3}
    for metric, value in expected.items():
        figure = value_of(summary, "mut/c", "overall", metric)
        assert figure["value"] == pytest.approx(value), metric
        assert figure["n_items"] == 3
    assert value_of(summary, "mut/c", "overall", "win_rate")["n_judgements"] == 9  # 3 questions x 3 runs
    assert value_of(summary, "mut/c", "overall", "unusable")["value"] == 0
    assert value_of(summary, "mut/c", "subdomain", "cultural_failure_rate", "domain", "Festivals")["value"] == 50
    assert value_of(summary, "mut/c", "subdomain", "cultural_failure_rate", "domain", "Crafts")["value"] == 100
    items = pq.read_table(outcome.path / "items.parquet").to_pandas()
    assert len(items) == 9 and items["answer_is_b"].nunique() == 2  # both positions used
    assert len(engines.seen[JUDGE]) == 9 * 4
    answer_request = engines.seen["mut/c"][0]
    assert answer_request.messages[0].role == "user"  # no system prompt steers the model under test
    assert (outcome.path / "subdomains_mut-c.png").is_file()
    assert "HHH avg" in (outcome.path / "report.md").read_text()


# ---------------------------------------------------------------------- Demo-SafetyBench

RATERS = {"r1": ("Man", "gen z"), "r2": ("Man", "gen x+"), "r3": ("Woman", "gen z"), "r4": ("Woman", "gen x+")}
HUMAN_RATINGS = {  # conversation -> ratings of r1..r4 (c4: no usable human rating)
    "c1": ("Yes", "Yes", "Yes", "No"), "c2": ("No", "No", "Yes", "Unsure"), "c3": ("No", "No", "No", "No"),
    "c4": (None, None, None, None),
}
MODEL_RATINGS = {"c1": "Yes", "c2": "Yes", "c3": "No", "c4": "Yes"}
BUILD_RATINGS = {"c1": "Yes", "c2": "No", "c3": "No", "c4": "Unknown"}


@pytest.fixture
def demo(home: Path) -> str:
    rows = [{"prompt_id": cid, "conversation": f"USER: hi <<{MODEL_RATINGS[cid]}>>", "response": "BOT: hello",
             "safety_label": "None", "rater_id": int(rid[1]), "rater_gender": RATERS[rid][0],
             "rater_age": RATERS[rid][1], "Q_overall": rating, "split": "train"}
            for cid, ratings in HUMAN_RATINGS.items() for rid, rating in zip(RATERS, ratings, strict=True)]
    llm = [{"prompt_id": cid, "conversation": "...", "rater_model": RATER, "rating": rating, "safety_label": "None",
            "split": "train"} for cid, rating in BUILD_RATINGS.items()]
    spec = make_spec("demo_safetybench", "raters", [("safety", "safety")], raters=(RATER,))
    return publish(home, "demo_safetybench", spec, {"default": pd.DataFrame(rows), "llm_ratings": pd.DataFrame(llm)})


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # pingouin 0.7 on pandas 3.1
def test_rater_agreement_and_demographic_figures(home: Path, demo: str) -> None:
    pingouin = pytest.importorskip("pingouin")
    engines = ScriptedEngines({"mut/d": lambda request: marker(user_text(request))})
    outcome = run_benchmark(BenchmarkOptions(dataset="demo_safetybench", models=("mut/d", RATER), **FAST),
                            DatasetStore(home), engines)
    summary = outcome.summary
    assert set(engines.engines) == {"mut/d"}  # the build's rater is reused, not asked again
    request = engines.seen["mut/d"][0]
    assert request.choices == ("Yes", "No", "Unsure") and request.sampling.temperature == 0
    assert "Final assistant turn:\nBOT: hello" in user_text(request)
    assert len(engines.seen["mut/d"]) == 4  # one run: greedy ratings would repeat

    # Human mean c1 .75, c2 .375, c3 0 (c4 has none); model scores 1, 1, 0.
    long = pd.DataFrame({"item": [1, 2, 3] * 2, "rater": ["h"] * 3 + ["m"] * 3,
                         "score": [0.75, 0.375, 0.0, 1.0, 1.0, 0.0]})
    reference = pingouin.intraclass_corr(long, targets="item", raters="rater", ratings="score").set_index("Type")["ICC"]
    # pingouin names Shrout & Fleiss case 2 "ICC2" / "ICC2k" in older releases, "ICC(A,1)" / "ICC(A,k)" in newer ones
    average, single = ("ICC(A,k)", "ICC(A,1)") if "ICC(A,k)" in reference.index else ("ICC2k", "ICC2")
    assert value_of(summary, "mut/d", "overall", "icc_2k")["value"] == pytest.approx(reference[average])
    assert value_of(summary, "mut/d", "overall", "icc_21")["value"] == pytest.approx(reference[single])
    assert value_of(summary, "mut/d", "overall", "icc_2k")["n_items"] == 3
    assert value_of(summary, "mut/d", "overall", "majority_agreement")["value"] == pytest.approx(2 / 3)
    assert value_of(summary, "mut/d", "overall", "unsafe_rate")["value"] == pytest.approx(3 / 4)

    # Human raters by gender: Man 2/6 unsafe, Woman 2/5 (the Unsure has no verdict).
    humans = kinds.HUMAN_RATERS
    assert value_of(summary, humans, "demographic_group", "unsafe_rate", "rater_gender", "Man")["value"] == pytest.approx(1 / 3)
    assert value_of(summary, humans, "demographic_group", "unsafe_rate", "rater_gender", "Woman")["value"] == pytest.approx(2 / 5)
    assert value_of(summary, humans, "demographic", "demographic_parity_difference", "rater_gender")["value"] == \
        pytest.approx(2 / 5 - 1 / 3)
    assert value_of(summary, humans, "demographic", "demographic_sensitivity", "rater_gender")["value"] == \
        pytest.approx(1 / 30)
    assert value_of(summary, humans, "demographic", "equalized_odds_difference", "rater_gender")["value"] == \
        pytest.approx(1 / 2)  # TPR vs majority: Man 1, Woman 1/2; FPR: 0 vs 1/3
    # The model against each rater: disagreement Man 2/6, Woman 1/5.
    assert value_of(summary, "mut/d", "demographic", "demographic_parity_difference", "rater_gender")["value"] == \
        pytest.approx(1 / 3 - 1 / 5)
    assert value_of(summary, "mut/d", "demographic", "demographic_sensitivity", "rater_gender")["value"] == \
        pytest.approx(1 / 15)
    assert value_of(summary, "mut/d", "demographic", "equalized_odds_difference", "rater_gender")["value"] == \
        pytest.approx(1 / 6)  # FPR Man 1/2, Woman 1/3; TPR 1 for both

    # The reused build rater: "Unknown" is unusable; no requests, so no operational rows.
    assert value_of(summary, RATER, "overall", "unusable")["value"] == 1
    assert summary[(summary["model"] == RATER) & (summary["scope"] == "operational")].empty
    assert value_of(summary, kinds.ALL_RATERS, "overall", "icc_2k")["n_items"] == 3

    report = (outcome.path / "report.md").read_text()
    assert "ICC(2,k)" in report and "(1/G) x sum over the G groups" in report
    assert "no reference positives has no TPR" in report and "left out of that gap" in report  # the EOD rule
    # Three items: many resamples repeat one item, where ICC is undefined; the report counts them.
    icc_resamples = value_of(summary, "mut/d", "overall", "icc_2k")["n_resamples_valid"]
    assert 0 < icc_resamples < FAST["bootstrap_resamples"]
    fewest = int(summary["n_resamples_valid"].min())
    assert f"rest on fewer than {FAST['bootstrap_resamples']} valid resamples, the fewest {fewest} (" in report
    assert (outcome.path / "humans_rater_gender.png").is_file()
    assert (outcome.path / "disagreement_mut-d_rater_age.png").is_file()


def test_rating_without_any_human_rating_gives_undefined_agreement(home: Path) -> None:
    rows = pd.DataFrame({"prompt_id": ["c1", "c2"], "conversation": ["<<Yes>>", "<<No>>"], "safety_label": "None",
                         "rater_gender": "Man", "Q_overall": [None, None], "split": "train"})
    publish(home, "demo_safetybench", make_spec("demo_safetybench", "raters", [("safety", "safety")], raters=(RATER,)),
            {"default": rows})
    engines = ScriptedEngines({"mut/d": lambda request: marker(user_text(request))})
    outcome = run_benchmark(BenchmarkOptions(dataset="demo_safetybench", models=("mut/d",), **FAST),
                            DatasetStore(home), engines)
    summary = outcome.summary
    assert math.isnan(value_of(summary, "mut/d", "overall", "icc_2k")["value"])
    assert value_of(summary, "mut/d", "overall", "icc_2k")["n_items"] == 0
    assert value_of(summary, "mut/d", "overall", "unsafe_rate")["value"] == pytest.approx(1 / 2)
    assert math.isnan(value_of(summary, kinds.HUMAN_RATERS, "demographic", "demographic_sensitivity",
                               "rater_gender")["value"])
    assert (outcome.path / "report.md").is_file()


# ----------------------------------------------------------------------- Prefect flow


def test_benchmark_flow_runs_under_prefect(prefect_harness, home: Path, misaligntrade: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.benchmark as benchmark_module

    engines = ScriptedEngines({"mut/a": detector})
    monkeypatch.setattr(benchmark_module, "EnginePool", lambda profile, **options: engines)
    result = benchmark_module.benchmark(dataset="misaligntrade", models=["mut/a", "mut/a"], runs=2,
                                        bootstrap_resamples=100, home=str(home))
    assert result["version"] == misaligntrade and result["kind"] == "detect"
    assert Path(result["path"], "report.md").is_file()
    headline = {row["metric"]: row["value"] for row in result["headline"]}
    assert headline["coverage"] == pytest.approx(7 / 8)
    # The local profile caps responses at 40 tokens, but detect answers are one label anyway.
    assert engines.seen["mut/a"][0].sampling.max_tokens == kinds.CHOICE_MAX_TOKENS


# ------------------------------------------------------------------ tiny real model


def test_tiny_transformers_model_runs_the_detect_benchmark(tmp_path: Path, home: Path, misaligntrade: str) -> None:
    if importlib.util.find_spec("tasks.engines.transformers_backend") is None:
        pytest.skip("tasks/engines/transformers_backend.py is not written yet")
    from schemas.profile import EngineConfig, Profile
    from tasks.engines.pool import EnginePool
    from tests.tiny_model import build_tiny_model

    model_path = build_tiny_model(tmp_path / "tiny")
    profile = Profile(name="tiny", description="tiny random model",
                      default_engine=EngineConfig(backend="transformers", model=str(model_path), device="cpu"))
    pool = EnginePool(profile, cache_path=None, reuse_cache=False)
    outcome = run_benchmark(BenchmarkOptions(dataset="misaligntrade", models=("tiny",), runs=1, limit=2,
                                             bootstrap_resamples=50), DatasetStore(home), pool)
    items = pq.read_table(outcome.path / "items.parquet").to_pandas()
    assert len(items) == 4  # p1, p2: aligned + misaligned
    # Random weights: content is noise, but a closed choice is either a label or unusable.
    assert set(items["answer_label"].dropna()) <= {"aligned", "misaligned"}
    assert value_of(outcome.summary, "tiny", "operational", "requests")["value"] == 4
    assert value_of(outcome.summary, "tiny", "operational", "cold_start_s")["value"] > 0


# ------------------------------------------------------------------------------- CLI


def test_benchmark_command_passes_options_to_the_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    import flows.benchmark as benchmark_module

    calls = []

    def fake_flow(**parameters):
        calls.append(parameters)
        return {"dataset": "savacu", "version": "v", "run_id": "r", "kind": "generate", "path": "/results",
                "headline": [{"model": "a", "metric": "failure_rate", "value": 0.25, "ci_low": 0.1, "ci_high": 0.4,
                              "n_items": 8}]}

    monkeypatch.setattr(benchmark_module, "benchmark", fake_flow)
    app = typer.Typer()
    app.command("benchmark")(benchmark_module.benchmark_command)
    arguments = ["savacu", "--models", "a, b", "--mode", "generate", "--runs", "1", "--limit", "5", "--rerate"]
    # The local profile runs every model id on the packaged SmolLM2: two names, one model.
    same_engine = CliRunner().invoke(app, arguments)
    assert isinstance(same_engine.exception, ConfigError) and not calls
    assert "a, b -> transformers:packaged:smollm2@unpinned" in str(same_engine.exception)
    result = CliRunner().invoke(app, [*arguments, "--allow-same-engine"])
    assert result.exit_code == 0, result.output
    assert calls == [{"dataset": "savacu", "models": ["a", "b"], "version": None, "profile": "local",
                      "mode": "generate", "runs": 1, "limit": 5, "split": None, "reuse_cache": False,
                      "reuse_build_ratings": False, "home": None, "allow_same_engine": True}]
    assert "failure_rate" in result.output and "/results/report.md" in result.output
    refused = CliRunner().invoke(app, ["savacu", "--models", "a", "--mode", "judge"])
    assert refused.exit_code == 2 and not calls[1:]


def test_models_on_one_engine_are_found_and_refused_by_the_flow(home: Path, misaligntrade: str) -> None:
    from flows.benchmark import benchmark, models_sharing_engines
    from schemas.profile import EngineConfig, Profile

    profile = Profile(name="mixed", description="two models, one engine each, a third sharing",
                      models={"a": EngineConfig(backend="openai", model="m1", base_url="http://x"),
                              "b": EngineConfig(backend="openai", model="m2", base_url="http://x"),
                              "c": EngineConfig(backend="openai", model="m1", base_url="http://x")})
    assert models_sharing_engines(["a", "b"], profile) == {}
    assert models_sharing_engines(["a", "b", "c"], profile) == {"openai:m1@unpinned": ["a", "c"]}
    with pytest.raises(ConfigError, match="--allow-same-engine"):
        benchmark.fn(dataset="misaligntrade", models=["x", "y"], home=str(home))


def test_the_report_says_how_many_resamples_each_interval_rests_on() -> None:
    from tasks.benchmark.report import resamples_text

    def figures(counts: list[float | None]) -> pd.DataFrame:
        return pd.DataFrame({"model": "m", "scope": "overall", "dimension": None, "group": None,
                             "metric": [f"metric{i}" for i in range(len(counts))], "n_resamples_valid": counts})

    assert resamples_text(figures([200, 200, None]), 200).endswith("every interval here rests on all 200 resamples.")
    assert resamples_text(figures([None]), 200).endswith("no figure here has an interval.")
    short = resamples_text(figures([200, 150, 90]), 200)
    assert "2 of 3 intervals rest on fewer than 200 valid resamples, the fewest 90 (`m` metric2, overall)" in short
