"""Prompt templates: one YAML file per LLM step in ``prompts/``.

Each file holds a ``system`` and a ``user`` Jinja template. Source text is data: it is
passed as a variable and rendered by a sandboxed environment, never evaluated, so a
prompt that contains ``{{ ... }}`` stays literal text. Every template's sha256 goes into
the manifest and into cache keys (through the rendered messages).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, Template
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tasks.engines.base import Message

_ENVIRONMENT = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@lru_cache(maxsize=256)
def _compiled(source: str) -> Template:
    # Compiling costs far more than rendering, and a build renders each template per request.
    return _ENVIRONMENT.from_string(source)


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    sha256: str
    system: str | None
    user: str

    def render(self, **variables: Any) -> tuple[Message, ...]:
        messages = []
        if self.system:
            messages.append(Message(role="system", content=_compiled(self.system).render(**variables).strip()))
        messages.append(Message(role="user", content=_compiled(self.user).render(**variables).strip()))
        return tuple(messages)


class PromptLibrary:
    """The templates of one build, loaded once; `used` remembers which ones a build touched."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._templates: dict[str, PromptTemplate] = {}
        self.used: dict[str, str] = {}

    def get(self, name: str) -> PromptTemplate:
        if name not in self._templates:
            self._templates[name] = load_template(self.folder / f"{name}.yaml")
        template = self._templates[name]
        self.used[name] = template.sha256
        return template


def load_template(path: Path) -> PromptTemplate:
    if not path.is_file():
        raise FileNotFoundError(f"prompt template {path} does not exist")
    raw = path.read_bytes()
    data = yaml.safe_load(raw)
    if not isinstance(data, dict) or not isinstance(data.get("user"), str):
        raise ValueError(f"prompt template {path} needs a string `user` field (and optionally `system`)")
    unknown = set(data) - {"system", "user", "description", "version"}
    if unknown:
        raise ValueError(f"prompt template {path}: unknown fields {sorted(unknown)}")
    return PromptTemplate(name=path.stem, sha256=hashlib.sha256(raw).hexdigest(), system=data.get("system"), user=data["user"])
