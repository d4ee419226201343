"""The cached value: one input's output row (label scores, an embedding), as versioned float32.

One version byte, then the row as little-endian float32: exactly the values the runtime
computed, 4 bytes a number. A reader that meets another version (such as the JSON entries of
format 1), a length that is not whole numbers, or a value that is not finite treats the entry
as a miss, so a format change never misreads old entries and a corrupted store never fails a
request.
"""

from __future__ import annotations

import numpy as np

FORMAT_VERSION = 2
_DTYPE = np.dtype("<f4")


def encode_result(row: np.ndarray) -> bytes:
    return bytes([FORMAT_VERSION]) + np.ascontiguousarray(row, dtype=_DTYPE).tobytes()


def decode_result(data: bytes) -> np.ndarray | None:
    """The row in ``data``, or ``None`` when it is not a well-formed entry of this format."""
    if not isinstance(data, bytes | bytearray) or len(data) < 1 + _DTYPE.itemsize or data[0] != FORMAT_VERSION:
        return None
    if (len(data) - 1) % _DTYPE.itemsize:
        return None
    row = np.frombuffer(data, dtype=_DTYPE, offset=1).astype(np.float32)
    return row if bool(np.isfinite(row).all()) else None
