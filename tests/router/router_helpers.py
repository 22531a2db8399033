"""What the router tests share: a deterministic stand-in embedder."""

from __future__ import annotations

import re
import zlib

import numpy as np


def bag_of_words(text: str) -> np.ndarray:
    """Hashed word counts (shared words => similar); never the zero vector."""
    vec = np.zeros(256, dtype=np.float32)
    for word in re.findall(r"[a-z]+", text.lower()):
        vec[zlib.crc32(word.encode()) % 256] += 1.0
    vec[255] += 0.01
    return vec
