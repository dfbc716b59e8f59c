"""Print the project's dependencies plus those of the named extras, one per line, from
pyproject.toml (run from the repository root): `python .ci/project_requirements.py local test`.

The vLLM tier installs these into its cached venv but not the project itself: the tier runs
the checkout's code (pytest's `pythonpath = ["."]`, `python -m flows.cli` from the root), and
the venv outlives checkouts, so an installed copy would be stale and an editable one would
point at whichever worktree built the venv.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    unknown = sorted(set(extras) - set(optional))
    if unknown:
        raise SystemExit(f"unknown extras {unknown}; pyproject.toml has {sorted(optional)}")
    return [*project["dependencies"], *(line for extra in extras for line in optional[extra])]


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:])))
