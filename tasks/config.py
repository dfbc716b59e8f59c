"""Reading specs, profiles and taxonomies from ``data/``, with errors that name the file and field."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path
import re
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from schemas.profile import Profile
from schemas.spec import DatasetSpec, SourceSpec
from schemas.taxonomy import Taxonomy, TaxonomyFile


Model = TypeVar("Model", bound=BaseModel)
FILE_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"  # names become file paths: no traversal


class ConfigError(ValueError):
    """A spec, profile or taxonomy file is missing or invalid."""


CODE_ROOT = Path(__file__).resolve().parent.parent
RESOURCES_PACKAGE = "alignforge_data"


def resources_root(code_root: Path = CODE_ROOT) -> Path:
    """The folder holding data/ and prompts/ (spec paths such as `data/samples/...` are relative
    to it): the checkout itself, or the `alignforge_data` package an installed wheel ships them in."""
    if (code_root / "data").is_dir() and (code_root / "prompts").is_dir():
        return code_root
    package = importlib.util.find_spec(RESOURCES_PACKAGE)
    if package is None or not package.submodule_search_locations:
        raise ConfigError(f"neither {code_root} nor an installed {RESOURCES_PACKAGE} package holds data/ and prompts/")
    return Path(package.submodule_search_locations[0])


PROJECT_ROOT = resources_root()
DATA_DIR = PROJECT_ROOT / "data"
PROMPTS_DIR = PROJECT_ROOT / "prompts"


def alignforge_home() -> Path:
    """Where versions, the request cache and exported models live (``ALIGNFORGE_HOME``)."""
    return Path(os.environ.get("ALIGNFORGE_HOME", Path.home() / ".cache" / "alignforge")).expanduser()


def read_yaml_model(path: Path, model: type[Model]) -> Model:
    if not path.is_file():
        raise ConfigError(f"{path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from error
    try:
        return model.model_validate(data)
    except ValidationError as error:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"{path}: {details}") from error


def _named_file(folder: Path, name: str, kind: str) -> Path:
    if not re.fullmatch(FILE_NAME_PATTERN, name):
        raise ConfigError(f"{kind} name {name!r} is not a plain name (letters, digits, _ or -)")
    return folder / f"{name}.yaml"


@lru_cache(maxsize=None)
def load_taxonomy(name: str) -> Taxonomy:
    file = read_yaml_model(_named_file(DATA_DIR / "taxonomies", name, "taxonomy"), TaxonomyFile)
    parent = load_taxonomy(file.subset_of) if file.subset_of else None
    try:
        return file.resolve(parent)
    except ValidationError as error:
        raise ConfigError(f"taxonomy {name}: {error}") from error


def config_label(name_or_path: str) -> str:
    """A spec or profile as run names show it: its name, or a file's stem rather than its whole path."""
    path = Path(name_or_path)
    return path.stem if path.suffix in (".yaml", ".yml") else name_or_path


def load_spec(name_or_path: str) -> DatasetSpec:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = _named_file(DATA_DIR / "specs", name_or_path, "dataset")
    return read_yaml_model(path, DatasetSpec)


def load_profile(name_or_path: str) -> Profile:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = _named_file(DATA_DIR / "profiles", name_or_path, "profile")
    return read_yaml_model(path, Profile)


def spec_names() -> list[str]:
    return sorted(p.stem for p in (DATA_DIR / "specs").glob("*.yaml"))


def taxonomies_for(spec: DatasetSpec) -> dict[str, Taxonomy]:
    return {d.name: load_taxonomy(d.taxonomy) for d in spec.dimensions}


def model_sha(model: BaseModel) -> str:
    return hashlib.sha256(json.dumps(model.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def apply_profile(spec: DatasetSpec, profile: Profile) -> DatasetSpec:
    """The spec as this profile runs it: a CPU profile scales targets and lengths down.
    Steps read only the effective spec; the manifest records it."""
    expansion, responses = spec.expansion, spec.responses
    if profile.expansion_target is not None:
        expansion = expansion.model_copy(update={"target_per_domain": profile.expansion_target})
    if profile.max_expansion_rounds is not None:
        expansion = expansion.model_copy(update={"max_rounds": profile.max_expansion_rounds})
    if profile.candidates_per_target is not None:
        responses = responses.model_copy(update={"candidates": profile.candidates_per_target})
    if profile.max_response_tokens is not None:
        sampling = responses.sampling.model_copy(update={"max_tokens": profile.max_response_tokens})
        responses = responses.model_copy(update={"sampling": sampling})
    if profile.judge_mode is not None:
        responses = responses.model_copy(update={"judge_mode": profile.judge_mode})
    if profile.reject_truncated_responses is not None:
        filters = responses.filters.model_copy(update={"reject_truncated": profile.reject_truncated_responses})
        responses = responses.model_copy(update={"filters": filters})
    if profile.feedback_iterations is not None:
        responses = responses.model_copy(update={"feedback_iterations": profile.feedback_iterations})
    if profile.require_pass is not None:
        responses = responses.model_copy(update={"require_pass": profile.require_pass})
    classification = spec.classification
    if profile.classification_threshold is not None:
        classification = classification.model_copy(update={"threshold": profile.classification_threshold})
    update = {"expansion": expansion, "responses": responses, "classification": classification}
    if profile.shard_size is not None:
        update["shard_size"] = profile.shard_size
    return DatasetSpec.model_validate(spec.model_copy(update=update).model_dump())


def with_source_encoding(spec: DatasetSpec, encoding: str | None) -> DatasetSpec:
    """The spec with `--encoding` as its source's fallback encoding (checked as the spec field
    is); being in the spec, it is in the version's content key and the manifest."""
    if encoding is None:
        return spec
    try:
        source = SourceSpec.model_validate({**spec.source.model_dump(), "encoding": encoding})
    except ValidationError as error:
        raise ConfigError(f"--encoding {encoding!r}: {error.errors()[0]['msg']}") from error
    return spec.model_copy(update={"source": source})
