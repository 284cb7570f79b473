"""GPTConfig: argument validation, immutability and the dict round trip."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from npgpt import GPTConfig

SIZE_FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
SMALL = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, dropout=0.0)


def small(**overrides):
    return GPTConfig(**{**SMALL, **overrides})


def test_defaults_are_gpt2_small():
    c = GPTConfig()
    assert (c.vocab_size, c.block_size, c.n_layer, c.n_head, c.n_embd, c.dropout) == (50257, 1024, 12, 12, 768, 0.0)
    assert c.head_size == 64


@pytest.mark.parametrize("field", SIZE_FIELDS)
@pytest.mark.parametrize("value", [0, -1, -100])
def test_sizes_below_one_rejected(field, value):
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        small(**{field: value})


@pytest.mark.parametrize("field", SIZE_FIELDS)
@pytest.mark.parametrize("value", [True, False, 2.0, 8.5, "8", None])
def test_sizes_must_be_real_ints(field, value):
    # bool is an int subclass but never a meaningful size; floats, even integral ones, are refused
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        small(**{field: value})


@pytest.mark.parametrize("n_embd, n_head", [(8, 3), (10, 4), (7, 2), (4, 8)])
def test_n_embd_not_divisible_by_n_head(n_embd, n_head):
    with pytest.raises(ValueError, match=r"^n_embd\b"):
        small(n_embd=n_embd, n_head=n_head)


@pytest.mark.parametrize("value", [-0.1, -1e-12, 1.0, 1.5, float("nan"), float("inf"), True, "0.1", None])
def test_dropout_outside_unit_interval_rejected(value):
    with pytest.raises(ValueError, match=r"^dropout\b"):
        small(dropout=value)


@pytest.mark.parametrize("value", [0, 0.0, 0.1, 0.5, 0.999])
def test_dropout_inside_unit_interval_accepted(value):
    assert small(dropout=value).dropout == value


@given(n_head=st.integers(1, 6), head_size=st.integers(1, 6))
def test_head_size_is_n_embd_over_n_head(n_head, head_size):
    c = small(n_head=n_head, n_embd=n_head * head_size)
    assert c.head_size == head_size


def test_frozen():
    c = small()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.n_layer = 3  # type: ignore[misc]
    assert c.n_layer == 2


def test_equal_configs_are_equal_and_hashable():
    assert small() == small()
    assert hash(small()) == hash(small())
    assert small() != small(n_layer=3)


@given(
    vocab_size=st.integers(1, 100), block_size=st.integers(1, 64), n_layer=st.integers(1, 4),
    n_head=st.integers(1, 4), head_size=st.integers(1, 8),
    dropout=st.floats(0.0, 1.0, exclude_max=True, allow_nan=False),
)
def test_dict_round_trip(vocab_size, block_size, n_layer, n_head, head_size, dropout):
    c = GPTConfig(vocab_size, block_size, n_layer, n_head, n_head * head_size, dropout)
    d = c.to_dict()
    assert d == dict(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                     n_embd=n_head * head_size, dropout=dropout)
    assert GPTConfig.from_dict(d) == c


def test_to_dict_returns_a_fresh_dict():
    c = small()
    d = c.to_dict()
    d["n_layer"] = 99
    assert c.n_layer == 2
    assert c.to_dict()["n_layer"] == 2


def test_from_dict_unexpected_key():
    d = {**small().to_dict(), "bias": True}
    with pytest.raises(ValueError, match=r"bias"):
        GPTConfig.from_dict(d)


@pytest.mark.parametrize("field", SIZE_FIELDS)
def test_from_dict_missing_size_key(field):
    d = small().to_dict()
    del d[field]
    with pytest.raises(ValueError, match=field):
        GPTConfig.from_dict(d)


def test_from_dict_without_dropout_uses_default():
    # dropout is the one key a dict may leave out (it does not change any shape)
    d = small(dropout=0.2).to_dict()
    del d["dropout"]
    assert GPTConfig.from_dict(d).dropout == 0.0


def test_from_dict_validates_values():
    d = {**small().to_dict(), "n_head": 3}
    with pytest.raises(ValueError, match=r"^n_embd\b"):
        GPTConfig.from_dict(d)
