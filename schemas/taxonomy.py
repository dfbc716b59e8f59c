"""Taxonomies: the closed label sets that prompts are classified into.

One YAML file per taxonomy in ``data/taxonomies/``. A taxonomy may be a subset of
another (CULTURAX's 30 subdomains are a subset of the 41 cultural domains), declared
with ``subset_of`` + ``include`` so names and descriptions live in one place.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NONE_LABEL = "None"
UNKNOWN_LABEL = "Unknown"
UNKNOWN_ID = -1


class Domain(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=0)
    name: str = Field(min_length=1)
    description: str = Field(min_length=10)
    key: str | None = None  # external key, e.g. BeaverTails' category key
    group: str | None = None  # higher-order group (Schwartz type, UNESCO FCS group)
    group_note: str | None = None  # why a judgement call was made
    inferred_id: bool = False  # id not published by the authors
    examples: tuple[str, ...] = ()  # few-shot examples written by us (never source rows)
    paper_count: int | None = None  # count in the authors' release, where published


class SpecialLabel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int
    name: str
    description: str
    examples: tuple[str, ...] = ()  # written by us, like Domain.examples


class Taxonomy(BaseModel):
    """A resolved taxonomy: ``domains`` are the counted labels, ``none``/``unknown`` sit outside."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    dimension: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    source: str
    version: int = Field(ge=1)
    domains: tuple[Domain, ...]
    none: SpecialLabel | None = None
    unknown: SpecialLabel = SpecialLabel(
        id=UNKNOWN_ID, name=UNKNOWN_LABEL, description="The classifier's answer could not be used."
    )
    groups: tuple[str, ...] = ()
    subset_of: str | None = None

    @model_validator(mode="after")
    def _unique(self) -> Taxonomy:
        ids = [d.id for d in self.domains]
        names = [d.name for d in self.domains]
        if len(set(ids)) != len(ids):
            raise ValueError(f"taxonomy {self.name}: duplicate domain ids")
        if len(set(names)) != len(names):
            raise ValueError(f"taxonomy {self.name}: duplicate domain names")
        specials = [s for s in (self.none, self.unknown) if s is not None]
        for special in specials:
            if special.id in ids or special.name in names:
                raise ValueError(f"taxonomy {self.name}: special label {special.name} collides with a domain")
        if self.groups:
            unknown_groups = {d.group for d in self.domains} - set(self.groups) - {None}
            if unknown_groups:
                raise ValueError(f"taxonomy {self.name}: domains use undeclared groups {sorted(unknown_groups)}")
        return self

    @property
    def domain_names(self) -> list[str]:
        return [d.name for d in self.domains]

    @property
    def allowed_labels(self) -> list[str]:
        """Labels a classifier may answer with: the domains, then None where the taxonomy has it."""
        return self.domain_names + ([self.none.name] if self.none else [])

    @property
    def output_labels(self) -> list[str]:
        """Every label that may appear in a dataset column (allowed labels plus Unknown)."""
        return self.allowed_labels + [self.unknown.name]

    def label_texts(self) -> dict[str, tuple[str, ...]]:
        """Per allowed label, the texts an embedding classifier averages into the label's
        prototype: "name: description", then the label's written examples."""
        labelled = [*self.domains, *([self.none] if self.none else [])]
        return {d.name: (f"{d.name}: {d.description}", *d.examples) for d in labelled}

    def label_id(self, label: str) -> int:
        return self._ids()[label]

    def domain(self, name: str) -> Domain:
        for domain in self.domains:
            if domain.name == name:
                return domain
        raise KeyError(f"taxonomy {self.name} has no domain {name!r}")

    def _ids(self) -> dict[str, int]:
        ids = {d.name: d.id for d in self.domains}
        if self.none:
            ids[self.none.name] = self.none.id
        ids[self.unknown.name] = self.unknown.id
        return ids


class TaxonomyFile(BaseModel):
    """What a taxonomy YAML file holds before a subset is resolved against its parent."""

    model_config = ConfigDict(extra="forbid")

    name: str
    title: str
    dimension: str
    source: str
    version: int = 1
    domains: list[Domain] = []
    none: SpecialLabel | None = None
    groups: list[str] = []
    subset_of: str | None = None
    include: list[str] = []  # names from the parent, when subset_of is set
    paper_counts: dict[str, int] = {}  # per included name, where the authors published counts

    @field_validator("include")
    @classmethod
    def _no_duplicate_includes(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("include lists a domain twice")
        return names

    @model_validator(mode="after")
    def _subset_or_domains(self) -> TaxonomyFile:
        if self.subset_of and self.domains:
            raise ValueError("a subset taxonomy lists `include`, not `domains`")
        if not self.subset_of and not self.domains:
            raise ValueError("a taxonomy needs `domains` (or `subset_of` + `include`)")
        if self.subset_of and not self.include:
            raise ValueError("a subset taxonomy needs a non-empty `include`")
        return self

    def resolve(self, parent: Taxonomy | None) -> Taxonomy:
        if not self.subset_of:
            return Taxonomy(
                name=self.name, title=self.title, dimension=self.dimension, source=self.source,
                version=self.version, domains=tuple(self.domains), none=self.none, groups=tuple(self.groups),
            )
        if parent is None or parent.name != self.subset_of:
            raise ValueError(f"taxonomy {self.name} needs its parent {self.subset_of}")
        missing = [n for n in self.include if n not in parent.domain_names]
        if missing:
            raise ValueError(f"taxonomy {self.name}: {missing} are not domains of {parent.name}")
        domains = tuple(
            parent.domain(n).model_copy(update={"paper_count": self.paper_counts.get(n)}) for n in self.include
        )
        return Taxonomy(
            name=self.name, title=self.title, dimension=self.dimension, source=self.source,
            version=self.version, domains=domains, none=self.none if self.none else parent.none,
            groups=parent.groups, subset_of=parent.name,
        )


def all_label_texts(taxonomies: Iterable[Taxonomy]) -> dict[str, tuple[str, ...]]:
    """The label texts of every taxonomy a classifier serves, by label name: requests name
    labels only, so a name several taxonomies share (None) keeps the last taxonomy's texts."""
    return {label: texts for taxonomy in taxonomies for label, texts in taxonomy.label_texts().items()}
