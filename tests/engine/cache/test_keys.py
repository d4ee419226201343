from __future__ import annotations

import hashlib
from pathlib import Path

from engine.cache import cache_key, content_digest, key_prefix


def test_the_key_names_model_version_digest_and_text_hash() -> None:
    key = cache_key("sentiment", "v2", "abc123", "I love this")
    assert key == f"sentiment:v2:abc123:{hashlib.sha256(b'I love this').hexdigest()}"
    assert key.startswith(key_prefix("sentiment", "v2")) and key.startswith(key_prefix("sentiment"))


def test_every_part_changes_the_key() -> None:
    base = cache_key("m", "v1", "d1", "text")
    assert len({base, cache_key("n", "v1", "d1", "text"), cache_key("m", "v2", "d1", "text"), cache_key("m", "v1", "d2", "text")}) == 4


def test_text_is_used_exactly_as_given() -> None:
    variants = ["Great", "great", "Great ", " Great", "Great\n", "Gre\u0301at", "Grëat"]
    assert len({cache_key("m", "v", "d", text) for text in variants}) == len(variants)


def test_a_lone_surrogate_hashes_instead_of_raising() -> None:
    assert cache_key("m", "v", "d", "\ud800") != cache_key("m", "v", "d", "\ud801")


def test_a_colon_in_a_name_cannot_alias_another_model() -> None:
    assert not cache_key("a:b", "v1", "d", "t").startswith(key_prefix("a"))
    assert not cache_key("a", "b:v1", "d", "t").startswith(key_prefix("a", "b"))


def test_content_digest_follows_file_contents(tmp_path: Path) -> None:
    model, tokenizer = tmp_path / "model.onnx", tmp_path / "tokenizer.json"
    model.write_bytes(b"weights")
    tokenizer.write_bytes(b"vocab")
    first = content_digest([model, tokenizer])
    assert len(first) == 16 and first == content_digest([model, tokenizer])
    tokenizer.write_bytes(b"vocab2")
    assert content_digest([model, tokenizer]) != first


def test_content_digest_counts_file_boundaries(tmp_path: Path) -> None:
    a, b, c, d = (tmp_path / name for name in "abcd")
    a.write_bytes(b"ab")
    b.write_bytes(b"c")
    c.write_bytes(b"a")
    d.write_bytes(b"bc")
    assert content_digest([a, b]) != content_digest([c, d])
