"""Deterministic request bodies that are streamed, never held whole in memory.

`pieces(total, size)` yields the same bytes on every run (a random 1 MiB base block,
rotated differently for every piece so reordered or repeated pieces change the
digest); `digest(total, size)` gives their sha256 without sending anything.
"""

import hashlib
import random

MIB = 1 << 20
_BASE = random.Random(20240601).randbytes(MIB)


def pieces(total, size=MIB):
    """Yield `total` bytes in pieces of at most `size` (size <= 1 MiB)."""
    assert 0 < size <= MIB
    sent = 0
    index = 0
    while sent < total:
        n = min(size, total - sent)
        shift = (index * 7919) % MIB
        block = _BASE[shift:] + _BASE[:shift]
        yield block[:n]
        sent += n
        index += 1


def digest(total, size=MIB):
    """sha256 hex digest of what pieces(total, size) yields."""
    h = hashlib.sha256()
    for piece in pieces(total, size):
        h.update(piece)
    return h.hexdigest()
