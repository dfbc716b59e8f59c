"""Artifact rendering and keys: pure functions, no Prefect server."""

from __future__ import annotations

from pathlib import Path

from flows.artifacts import artifact_key, card_markdown, version_link

CARD = "---\nlicense: mit\nconfigs:\n- config_name: default\n---\n\n# SAVACU\n\nBody text.\n"


def test_card_front_matter_becomes_a_yaml_code_block_and_the_body_stays() -> None:
    rendered = card_markdown(CARD)
    assert rendered.startswith("```yaml\nlicense: mit\nconfigs:\n- config_name: default\n```\n\n# SAVACU")
    assert "---" not in rendered
    assert rendered.endswith("Body text.\n")


def test_a_card_without_front_matter_is_left_as_it_is() -> None:
    assert card_markdown("# Title\n\n---\n\ntext") == "# Title\n\n---\n\ntext"
    assert card_markdown("---\nnever closed") == "---\nnever closed"


def test_keys_name_the_run_so_two_runs_never_share_one() -> None:
    first = artifact_key("demo_safetybench", "respond", run_id="0195f3a2-7c1e-7d00-8a4b-1f2e3d4c5b6a")
    second = artifact_key("demo_safetybench", "respond", run_id="0195f3a2-7c1e-7d00-9f00-aabbccddeeff")
    assert first == "demo-safetybench-respond-1f2e3d4c5b6a"
    assert first != second
    assert all(c.islower() or c.isdigit() or c == "-" for c in first)


def test_version_link_names_the_shared_store_or_this_host() -> None:
    path = Path("/data/alignforge/savacu/20261123T101500Z-3fa2c1d9e0")
    link, text = version_link("savacu", path.name, path, "s3://bucket/alignforge/", "gpu-1")
    assert link == "s3://bucket/alignforge/savacu/20261123T101500Z-3fa2c1d9e0"
    assert text == "savacu 20261123T101500Z-3fa2c1d9e0"
    link, text = version_link("savacu", path.name, path, None, "gpu-1")
    assert link == f"file://gpu-1{path}"
    assert text == f"savacu {path.name} on gpu-1: {path}"
