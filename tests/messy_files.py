"""Synthetic source files as users have them: spreadsheet exports with Windows-1252 bytes,
ids a spreadsheet turned into `1.43E+19`, blank trailing columns. Every row is written
for the tests; none comes from a real dataset."""

from __future__ import annotations

from pathlib import Path

# Questions written for the tests, with curly quotes and accents that cp1252 writes as one byte each.
QUESTIONS = [
    "Why do Lisbon\u2019s fado singers wear black shawls?",
    "How is the \u201cday of the dead\u201d altar built in Oaxaca?",
    "What makes a caf\u00e9 in Vienna different from one in Rome?",
    "Which dances close a wedding in Crete, and who leads them?",
    "How do potters in Jingdezhen fire celadon glazes?",
    "What does a na\u00efve painter from Haiti usually paint?",
]
DOMAINS = ["Live Music", "Festivals", "Culinary Arts", "Dance", "Crafts", "Fine Arts"]
DICES_COLUMNS = [
    "id", "rater_id", "rater_gender", "rater_race", "rater_raw_race", "rater_age", "rater_education", "phase",
    "item_id", "answer_time_ms", "answer_timestamp", "context", "response", "degree_of_harm", "harm_type",
    "safety_gold", "safety_gold_reason", "Q1_whole_conversation_evaluation",
    "Q2_harmful_content_medical_legal_financial_or_relationship_advice", "Q2_harmful_content_dangerous_content",
    "Q2_harmful_content_derogation_of_boat", "Q2_harmful_content_insensitive", "Q2_harmful_content_obscene_and_profane",
    "Q2_harmful_content_personal_information", "Q2_harmful_content_regulated_goods",
    "Q2_harmful_content_sexually_suggestive_content", "Q2_harmful_content_other", "Q3_bias_targeting_beliefs",
    "Q3_bias_targeting_gender_sexual_orientation", "Q3_bias_targeting_inherited_attributes", "Q3_bias_targeting_status",
    "Q3_bias_other", "Q4_misinformation", "Q5_political_affiliation", "Q6_policy_guidelines_polarizing_topics",
    "Q6_policy_guidelines_making_endorsement", "Q6_policy_guidelines_other", "Q2_harmful_content_overall",
    "Q3_bias_overall", "Q6_policy_guidelines_overall", "Q_overall",
]


def csv_cell(text: str, encoding: str = "cp1252") -> bytes:
    return b'"' + text.encode(encoding).replace(b'"', b'""') + b'"'


def spreadsheet_culturax_csv(path: Path, *, undecodable_row: bool = True) -> Path:
    """A cultural-questions CSV as a Windows spreadsheet saves it: cp1252 text, the authors'
    `class` and `domain` columns, ids in scientific notation, three blank trailing columns,
    a quoted newline, and (optionally) one row whose bytes no encoding makes sense of."""
    lines = [b"id,Question,class,domain,,,"]
    for number, (question, domain) in enumerate(zip(QUESTIONS, DOMAINS, strict=True)):
        question = question if number != 3 else question.replace(", and", ",\nand")  # a quoted newline
        lines.append(b",".join([f"1.4{number}E+19".encode(), csv_cell(question), str(number).encode(),
                                domain.encode(), b"", b"", b""]))
    if undecodable_row:  # 0x81 and 0x8d are undefined in cp1252, and not UTF-8 either
        lines.append(b'9.99E+19,"broken \x81\x8d bytes",7,Dance,,,')
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    return path


def authors_culturax_release(path: Path, rows: list[dict[str, str]]) -> Path:
    """A CULTURAX release in the authors' column layout (cp1252, as a spreadsheet saves it)."""
    header = ["Question", "class", "domain", "helpful_response", "harmless_response", "honest_response",
              "simhash_id", "pass_hhh"]
    lines = [",".join(header).encode()]
    lines += [b",".join(csv_cell(str(row.get(column, ""))) for column in header) for row in rows]
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    return path


def dices_csv(path: Path, conversations: int = 3, raters: int = 4) -> Path:
    """DICES-350's 41 columns as released, one row per rater x conversation, with quoted
    multi-line conversations and rater ids that a spreadsheet rounded."""
    races = ["White", "Black", "Latine", "Asian", "Multiracial"]
    lines = [",".join(DICES_COLUMNS).encode()]
    for item in range(conversations):
        context = f"USER: what should I bring to a potluck number {item}?\nBOT: Something easy to share."
        for rater in range(raters):
            values = {column: "" for column in DICES_COLUMNS}
            values.update({
                "id": str(100 + item * raters + rater), "rater_id": f"1.4{rater}E+19",
                "rater_gender": "Woman" if rater % 2 else "Man", "rater_race": races[rater % len(races)],
                "rater_raw_race": races[rater % len(races)], "rater_age": "gen z", "rater_education":
                "High school or below", "phase": "Phase3", "item_id": str(2000 + item), "context": context,
                "response": "Maybe a pasta salad \u2013 it travels well.", "degree_of_harm": "Benign",
                "harm_type": "", "safety_gold": "No", "safety_gold_reason": "[]", "Q_overall": "No",
            })
            lines.append(b",".join(csv_cell(values[column]) for column in DICES_COLUMNS))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path
