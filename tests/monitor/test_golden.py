"""The golden set: the shipped file, the subset and its hash, and every way a
golden file can be wrong."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from monitor.errors import GoldenError
from monitor.golden import GoldenQuestion, GoldenSet, load_golden
from monitor.settings import DEFAULT_GOLDEN_FILE
from scout.sources.local import pydoc_documents

VALID_QUESTION = """
[[questions]]
id = "first"
question = "What is the first thing?"
key_points = ["one", "two", "three"]
reference_urls = ["https://docs.python.org/3/reference/compound_stmts.html#the-with-statement"]
"""


def write(tmp_path: Path, body: str, name: str = "golden.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def shipped() -> GoldenSet:
    return load_golden(DEFAULT_GOLDEN_FILE)


# The shipped file


def test_shipped_file_holds_fifteen_questions_with_unique_ids(
    shipped: GoldenSet,
) -> None:
    ids = [question.id for question in shipped.questions]

    assert len(shipped) == 15
    assert len(set(ids)) == 15
    assert shipped.path == DEFAULT_GOLDEN_FILE


def test_shipped_questions_have_three_to_six_key_points_and_one_to_three_urls(
    shipped: GoldenSet,
) -> None:
    for question in shipped.questions:
        assert 3 <= len(question.key_points) <= 6, question.id
        assert 1 <= len(question.reference_urls) <= 3, question.id
        assert question.question.endswith("?"), question.id


def test_every_shipped_reference_url_is_a_page_of_the_bundled_corpus(
    shipped: GoldenSet,
) -> None:
    corpus_urls = {document.url for document in pydoc_documents()}

    for question in shipped.questions:
        assert set(question.reference_urls) <= corpus_urls, question.id


def test_shipped_key_points_are_worded_as_the_reference_words_them(
    shipped: GoldenSet,
) -> None:
    texts = {
        document.url: " ".join(document.text.lower().split())
        for document in pydoc_documents()
    }

    for question in shipped.questions:
        cited = " ".join(texts[url] for url in question.reference_urls)
        for point in question.key_points:
            assert point.lower() in cited, (question.id, point)


# Subset and hash


def test_subset_is_the_first_questions_in_file_order(shipped: GoldenSet) -> None:
    subset = shipped.subset(5)

    assert subset == list(shipped.questions[:5])
    assert subset[0].id == "with-exit"


def test_subset_hash_is_stable_and_follows_the_questions(tmp_path: Path) -> None:
    path = write(tmp_path, "version = 1\n" + VALID_QUESTION)
    golden = load_golden(path)
    changed = write(
        tmp_path,
        "version = 1\n" + VALID_QUESTION.replace('"one"', '"uno"'),
        "changed.toml",
    )

    assert golden.subset_hash(1) == load_golden(path).subset_hash(1)
    assert len(golden.subset_hash(1)) == 64
    assert load_golden(changed).subset_hash(1) != golden.subset_hash(1)


def test_subset_hash_ignores_questions_beyond_the_subset(shipped: GoldenSet) -> None:
    trimmed = GoldenSet(questions=shipped.questions[:5], path=shipped.path)

    assert trimmed.subset_hash(5) == shipped.subset_hash(5)
    assert shipped.subset_hash(6) != shipped.subset_hash(5)


def test_a_subset_larger_than_the_file_names_the_file_and_the_counts(
    shipped: GoldenSet,
) -> None:
    with pytest.raises(GoldenError) as caught:
        shipped.subset(16)

    message = str(caught.value)
    assert str(DEFAULT_GOLDEN_FILE) in message
    assert "16" in message and "15" in message


def test_questions_are_frozen_records(shipped: GoldenSet) -> None:
    question = shipped.questions[0]

    assert isinstance(question, GoldenQuestion)
    assert isinstance(question.key_points, tuple)
    with pytest.raises(AttributeError):
        question.id = "other"  # type: ignore[misc]


# Malformed files


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(GoldenError, match=r"nope\.toml") as caught:
        load_golden(missing)
    assert "MONITOR_GOLDEN_FILE" in str(caught.value)


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin.toml"
    path.write_bytes(b"version = 1\n# caf\xe9\n")

    with pytest.raises(GoldenError, match=r"latin\.toml.*cannot be read"):
        load_golden(path)


def test_a_folder_in_place_of_the_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(GoldenError, match="cannot be read"):
        load_golden(tmp_path)


def test_a_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'version = 1\n\n[[questions]]\nid = "a\n')

    with pytest.raises(GoldenError, match=r"golden.toml.*line 4"):
        load_golden(path)


WITH_URL = "https://docs.python.org/3/reference/compound_stmts.html#the-with-statement"
KEEP = ("", "")

# case: (first line, (text of the valid question, its replacement) or None for
# no question at all, parts the message must name)
MALFORMED: dict[str, tuple[str, tuple[str, str] | None, tuple[str, ...]]] = {
    "missing version": ("", KEEP, ("'version'",)),
    "unsupported version": ('version = "1"', KEEP, ("'version'",)),
    "no questions": ("version = 1", None, ("'questions'",)),
    "missing id": ("version = 1", ('id = "first"\n', ""), ("#1", "'id'")),
    "slug with spaces": (
        "version = 1", ('"first"', '"first one"'), ("#1", "'id'")
    ),
    "empty question": (
        "version = 1",
        ('"What is the first thing?"', '"  "'),
        ("'first'", "'question'"),
    ),
    "key points not a list": (
        "version = 1",
        ('["one", "two", "three"]', '"one"'),
        ("'first'", "'key_points'"),
    ),
    "empty key points": (
        "version = 1",
        ('["one", "two", "three"]', "[]"),
        ("'first'", "'key_points'"),
    ),
    "key point not a string": (
        "version = 1",
        ('["one", "two", "three"]', '["one", 2]'),
        ("'first'", "'key_points'"),
    ),
    "bad url scheme": (
        "version = 1",
        ("https://docs.python.org", "ftp://docs.python.org"),
        ("'first'", "'reference_urls'"),
    ),
    "bare url": (
        "version = 1",
        (WITH_URL, "docs.python.org/3/"),
        ("'first'", "'reference_urls'"),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_field_names_file_question_and_field(
    case: str, tmp_path: Path
) -> None:
    header, edit, expected = MALFORMED[case]
    body = header + "\n"
    if edit is not None:
        old, new = edit
        assert old in VALID_QUESTION
        body += VALID_QUESTION.replace(old, new) if old else VALID_QUESTION
    path = write(tmp_path, body)

    with pytest.raises(GoldenError) as caught:
        load_golden(path)

    message = str(caught.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_a_duplicate_id_names_both_questions(tmp_path: Path) -> None:
    path = write(tmp_path, "version = 1\n" + VALID_QUESTION + VALID_QUESTION)

    with pytest.raises(GoldenError) as caught:
        load_golden(path)

    message = str(caught.value)
    assert str(path) in message
    assert "'first' (#2)" in message and "#1" in message and "'id'" in message


def test_a_question_that_is_not_a_table_is_named_by_position(tmp_path: Path) -> None:
    path = write(tmp_path, 'version = 1\nquestions = ["just a string"]\n')

    with pytest.raises(GoldenError, match=r"question #1 is not a table"):
        load_golden(path)


def test_file_urls_are_accepted(tmp_path: Path) -> None:
    body = VALID_QUESTION.replace(
        "https://docs.python.org/3/reference/compound_stmts.html#the-with-statement",
        "file:///srv/docs/guide.md",
    )
    path = write(tmp_path, "version = 1\n" + body)

    golden = load_golden(path)

    assert golden.questions[0].reference_urls == ("file:///srv/docs/guide.md",)
