"""Packaging beyond pyproject.toml: a wheel carries data/ and prompts/ (specs, profiles,
taxonomies, samples, templates) as the package `alignforge_data`, where `tasks/config.py`
finds them when there is no checkout; the checkout keeps them at its top level."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RESOURCES_PACKAGE = "alignforge_data"
RESOURCE_FOLDERS = ("data", "prompts")


class BuildPyWithResources(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads them from the checkout
            return
        package = Path(self.build_lib) / RESOURCES_PACKAGE
        for folder in RESOURCE_FOLDERS:
            shutil.copytree(folder, package / folder, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (package / "__init__.py").write_text('"""alignforge\'s data/ and prompts/, shipped inside the wheel."""\n')


setup(cmdclass={"build_py": BuildPyWithResources})
