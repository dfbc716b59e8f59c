"""The taxonomy data files in data/taxonomies/ load, resolve and match the published lists."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from schemas.taxonomy import UNKNOWN_ID, UNKNOWN_LABEL, Taxonomy, TaxonomyFile, all_label_texts

ROOT = Path(__file__).resolve().parents[1]

TAXONOMY_DIR = ROOT / "data" / "taxonomies"

# The published lists the files must reproduce (shared/reference/taxonomies.md).
BEAVERTAILS_KEYS = [
    "animal_abuse", "child_abuse", "controversial_topics,politics",
    "discrimination,stereotype,injustice", "drug_abuse,weapons,banned_substance",
    "financial_crime,property_crime,theft", "hate_speech,offensive_language",
    "misinformation_regarding_ethics,laws_and_safety", "non_violent_unethical_behavior",
    "privacy_violation", "self_harm", "sexually_explicit,adult_content",
    "terrorism,organized_crime", "violence,aiding_and_abetting,incitement",
]
SCHWARTZ_GROUP_SIZES = {
    "Power": 5, "Achievement": 6, "Hedonism": 2, "Stimulation": 3, "Self-direction": 5,
    "Universalism": 9, "Benevolence": 9, "Tradition": 6, "Conformity": 4, "Security": 7,
}
CULTURAL_PUBLISHED = [
    "Artifacts", "Monuments", "Museums", "Historical and Archeological Sites", "National Parks",
    "Zoos and Aquariums", "Botanical Gardens", "Marine Ecosystems", "Cultural Landscapes",
    "Libraries", "Language", "Culinary Arts", "Crafts", "Bio-Cultural Practices", "Folk Sports",
    "Festivals", "Film and Video", "TV", "Radio", "Festivals and Markets",
    "Theatrical Performance", "Dance", "Opera", "Graphic Design", "Fashion Design",
    "Industrial Design", "Architectural Services", "Interior Design", "Fine Arts", "Photography",
    "Illustrations", "Record Music", "Live Music", "Musical Instruments", "Books", "Newspapers",
    "Magazines", "Social Networks", "Blogs", "Video Games", "Wikis",
]  # index == published class id
CULTURAL_INFERRED_IDS = {5, 18, 30, 31, 36, 40}
CULTURAX_PAPER_COUNTS = {
    "Festivals": 387, "Festivals and Markets": 384, "Theatrical Performance": 170, "Crafts": 108,
    "Culinary Arts": 100, "Language": 99, "Folk Sports": 54, "Social Networks": 40, "Dance": 38,
    "Fashion Design": 23, "Blogs": 15, "TV": 14, "Bio-Cultural Practices": 10,
    "Film and Video": 9, "Video Games": 9, "Architectural Services": 7, "Books": 5,
    "Interior Design": 5, "Newspapers": 4, "Fine Arts": 3, "Magazines": 3,
    "Cultural Landscapes": 2, "Libraries": 2, "National Parks": 2, "Radio": 2,
    "Historical and Archeological Sites": 1, "Industrial Design": 1, "Musical Instruments": 1,
    "Opera": 1, "Zoos and Aquariums": 1,
}
FCS_GROUPS = [
    "Cultural and Natural Heritage", "Performance and Celebration", "Visual Arts and Crafts",
    "Books and Press", "Audiovisual and Interactive Media", "Design and Creative Services",
    "Intangible Cultural Heritage", "Tourism", "Sports and Recreation",
]
ALL_FILES = ["safety", "value", "cultural", "culturax", "semantic_type"]


def _raw(name: str) -> dict:
    return yaml.safe_load((TAXONOMY_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def _file(name: str) -> TaxonomyFile:
    return TaxonomyFile.model_validate(_raw(name))


@pytest.fixture(scope="module")
def taxonomies() -> dict[str, Taxonomy]:
    loaded: dict[str, Taxonomy] = {}
    for name in ["safety", "value", "cultural", "semantic_type", "culturax"]:  # parents first
        tf = _file(name)
        loaded[name] = tf.resolve(loaded[tf.subset_of] if tf.subset_of else None)
    return loaded


# --------------------------------------------------------------------------- every file
@pytest.mark.parametrize("name", ALL_FILES)
def test_file_keys_are_taxonomyfile_fields(name):
    raw = _raw(name)
    assert set(raw) <= set(TaxonomyFile.model_fields)
    assert {"name", "title", "dimension", "source", "version"} <= set(raw)
    assert raw["name"] == name
    assert raw["source"].strip()


@pytest.mark.parametrize("name", ALL_FILES)
def test_ids_and_names_unique(taxonomies, name):
    tax = taxonomies[name]
    ids = [d.id for d in tax.domains]
    names = [d.name for d in tax.domains]
    assert len(set(ids)) == len(ids)
    assert len(set(names)) == len(names)
    assert len({n.casefold() for n in names}) == len(names)


@pytest.mark.parametrize("name", ALL_FILES)
def test_descriptions_and_examples_are_substantial(taxonomies, name):
    tax = taxonomies[name]
    all_examples = []
    for d in tax.domains:
        assert len(d.description) >= 40 and len(d.description.split()) >= 8, d.name
        assert d.description.casefold() != d.name.casefold()
        assert len(d.examples) >= 2, d.name
        for example in d.examples:
            assert len(example.split()) >= 4, (d.name, example)
        all_examples.extend(d.examples)
    assert len(set(all_examples)) == len(all_examples)
    if tax.none is not None:
        assert len(tax.none.description.split()) >= 8


@pytest.mark.parametrize("name", ALL_FILES)
def test_label_texts_are_the_named_description_then_the_examples(taxonomies, name):
    tax = taxonomies[name]
    texts = tax.label_texts()
    assert list(texts) == tax.allowed_labels  # every label a classifier may answer, Unknown not
    for label in [*tax.domains, *([tax.none] if tax.none else [])]:
        assert texts[label.name] == (f"{label.name}: {label.description}", *label.examples)


def test_shared_label_names_keep_the_last_taxonomys_texts(taxonomies):
    texts = all_label_texts([taxonomies["safety"], taxonomies["culturax"]])
    assert set(texts) == set(taxonomies["safety"].allowed_labels) | set(taxonomies["culturax"].allowed_labels)
    assert texts["None"] == taxonomies["culturax"].label_texts()["None"]


@pytest.mark.parametrize("name", ALL_FILES)
def test_unknown_sits_outside_the_domains(taxonomies, name):
    tax = taxonomies[name]
    assert tax.unknown.id == UNKNOWN_ID == -1
    assert tax.unknown.name == UNKNOWN_LABEL
    assert UNKNOWN_ID not in {d.id for d in tax.domains}
    assert UNKNOWN_LABEL not in tax.domain_names
    assert UNKNOWN_LABEL not in tax.allowed_labels
    assert tax.output_labels[-1] == UNKNOWN_LABEL
    assert tax.label_id(UNKNOWN_LABEL) == -1
    if tax.none is not None:
        assert tax.none.id not in {d.id for d in tax.domains}
        assert tax.allowed_labels[-1] == tax.none.name


# --------------------------------------------------------------------------- per taxonomy
def test_safety(taxonomies):
    tax = taxonomies["safety"]
    assert tax.dimension == "safety"
    assert len(tax.domains) == 14
    assert [d.id for d in tax.domains] == list(range(1, 15))
    assert [d.key for d in tax.domains] == BEAVERTAILS_KEYS
    assert tax.none is not None and (tax.none.id, tax.none.name) == (0, "None")


def test_value(taxonomies):
    tax = taxonomies["value"]
    assert tax.dimension == "value"
    assert len(tax.domains) == 56
    assert [d.id for d in tax.domains] == list(range(1, 57))
    assert list(tax.groups) == list(SCHWARTZ_GROUP_SIZES)
    for d in tax.domains:
        assert d.group in SCHWARTZ_GROUP_SIZES, d.name
    sizes = {g: sum(d.group == g for d in tax.domains) for g in SCHWARTZ_GROUP_SIZES}
    assert sizes == SCHWARTZ_GROUP_SIZES
    assert tax.none is not None and (tax.none.id, tax.none.name) == (0, "None")
    assert {"Social power", "Honoring parents & elders", "Accepting one's lot"} <= set(tax.domain_names)


def test_cultural(taxonomies):
    tax = taxonomies["cultural"]
    assert tax.dimension == "cultural"
    assert len(tax.domains) == 41
    assert [d.id for d in tax.domains] == list(range(41))
    assert [d.name for d in tax.domains] == CULTURAL_PUBLISHED
    assert {d.id for d in tax.domains if d.inferred_id} == CULTURAL_INFERRED_IDS
    assert tax.none is not None and (tax.none.id, tax.none.name) == (41, "None")
    assert tax.label_id("None") == 41
    assert list(tax.groups) == FCS_GROUPS
    for d in tax.domains:
        assert d.group in FCS_GROUPS, d.name
        if d.group_note is not None:
            assert len(d.group_note.split()) >= 4


def test_culturax(taxonomies):
    tax, parent = taxonomies["culturax"], taxonomies["cultural"]
    raw = _raw("culturax")
    assert tax.subset_of == "cultural" and tax.dimension == "cultural"
    assert len(tax.domains) == 30
    assert set(raw["paper_counts"]) == set(raw["include"])
    assert raw["paper_counts"] == CULTURAX_PAPER_COUNTS
    assert sum(d.paper_count for d in tax.domains) == 1500
    for d in tax.domains:  # names, ids, descriptions come from the parent
        assert d.model_copy(update={"paper_count": None}) == parent.domain(d.name)
    assert tax.none == parent.none and tax.label_id("None") == 41
    assert tax.groups == parent.groups


def test_semantic_type(taxonomies):
    tax = taxonomies["semantic_type"]
    assert tax.dimension == "semantic_type"
    assert [(d.id, d.name) for d in tax.domains] == [(1, "object"), (2, "attribute"), (3, "relation")]
    assert tax.none is None
    assert tax.allowed_labels == ["object", "attribute", "relation"]


# --------------------------------------------------------------------------- negative
def _mini(domains: list[dict], **extra) -> dict:
    return {"name": "mini", "title": "Mini", "dimension": "mini", "source": "test", "domains": domains, **extra}


def _dom(i: int, name: str) -> dict:
    return {"id": i, "name": name, "description": f"A test domain called {name} for negative tests."}


def test_duplicate_ids_rejected():
    tf = TaxonomyFile.model_validate(_mini([_dom(1, "A"), _dom(1, "B")]))
    with pytest.raises(pydantic.ValidationError, match="duplicate domain ids"):
        tf.resolve(None)


def test_duplicate_names_rejected():
    tf = TaxonomyFile.model_validate(_mini([_dom(1, "A"), _dom(2, "A")]))
    with pytest.raises(pydantic.ValidationError, match="duplicate domain names"):
        tf.resolve(None)


def test_none_colliding_with_a_domain_rejected():
    none = {"id": 1, "name": "None", "description": "Nothing applies."}
    tf = TaxonomyFile.model_validate(_mini([_dom(1, "A")], none=none))
    with pytest.raises(pydantic.ValidationError, match="collides"):
        tf.resolve(None)


def test_undeclared_group_rejected():
    dom = {**_dom(1, "A"), "group": "Nowhere"}
    tf = TaxonomyFile.model_validate(_mini([dom], groups=["Somewhere"]))
    with pytest.raises(pydantic.ValidationError, match="undeclared groups"):
        tf.resolve(None)


def test_subset_with_unknown_name_rejected(taxonomies):
    raw = _raw("culturax")
    raw["include"] = raw["include"][:-1] + ["Underwater Basket Weaving"]
    tf = TaxonomyFile.model_validate(raw)
    with pytest.raises(ValueError, match="Underwater Basket Weaving"):
        tf.resolve(taxonomies["cultural"])


def test_subset_with_duplicate_include_rejected():
    raw = _raw("culturax")
    raw["include"] = raw["include"] + [raw["include"][0]]
    with pytest.raises(pydantic.ValidationError, match="twice"):
        TaxonomyFile.model_validate(raw)


def test_subset_needs_its_parent(taxonomies):
    tf = _file("culturax")
    with pytest.raises(ValueError, match="needs its parent"):
        tf.resolve(None)
    with pytest.raises(ValueError, match="needs its parent"):
        tf.resolve(taxonomies["safety"])


def test_unknown_top_level_key_rejected():
    with pytest.raises(pydantic.ValidationError):
        TaxonomyFile.model_validate(_mini([_dom(1, "A")], labels=["A"]))
