"""The batch layout's attention mask: each row's past right-aligned, then its new tokens right-aligned."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.kv_block import padding_mask


def test_padding_mask_marks_each_rows_past_and_new_tokens() -> None:
    # Rows: 2 cached + 1 new, nothing cached + 2 new, 3 cached + 2 new; past width 3, 2 new columns.
    mask = padding_mask([2, 0, 3], 3, [1, 2, 2], 2)
    expected = [
        [0, 1, 1, 0, 1],
        [0, 0, 0, 1, 1],
        [1, 1, 1, 1, 1],
    ]
    np.testing.assert_array_equal(mask, expected)
    assert mask.dtype == np.int64


def test_padding_mask_of_a_decode_step() -> None:
    mask = padding_mask([4, 1], 4, [1, 1], 1)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]])


def test_padding_mask_rejects_mismatched_rows() -> None:
    with pytest.raises(ValueError, match="2 past lengths for 1 new counts"):
        padding_mask([1, 2], 2, [1], 1)
