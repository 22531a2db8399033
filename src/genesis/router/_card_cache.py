"""The router's card embeddings on disk, so a warm CLI call does not re-embed every card.

Embedding the 59 card texts of the default agents took 4-30 s per `genesis ask` on this
machine; read back from a ``.npy`` file they cost well under a millisecond. The file name is a
hash of the embedder's fingerprint and every card text, in order: a changed card, a reordered
card list or another model gives another key, so stale vectors are never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

_F32 = npt.NDArray[np.float32]
_FORMAT = "genesis-router-cards-v1"


class CardEmbeddingCache:
    """Card-text embeddings stored as ``{folder}/cards-{key}.npy``.

    ``fingerprint`` must change whenever the embedder's vectors could change (the
    `Embedder.fingerprint` contract). A file that cannot be read, or whose shape does not fit
    the texts, counts as a miss; a failed write is logged, never raised: the cache is an
    optimisation. Writes go to a temporary file renamed into place, so concurrent processes
    never read a half-written file.
    """

    def __init__(self, folder: str | Path, fingerprint: str) -> None:
        self._folder = Path(folder)
        self._fingerprint = fingerprint

    @property
    def folder(self) -> Path:
        return self._folder

    def path_for(self, texts: Sequence[str]) -> Path:
        """The file that holds (or would hold) the embeddings of ``texts``."""
        payload = json.dumps([_FORMAT, self._fingerprint, list(texts)], ensure_ascii=False)
        key = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]
        return self._folder / f"cards-{key}.npy"

    def load(self, texts: Sequence[str], *, check_rows: bool = True) -> _F32 | None:
        """The stored ``(len(texts), dim)`` matrix, or ``None`` when absent or unusable
        (``check_rows=False``: any 2-D matrix stored under ``texts`` as its key)."""
        path = self.path_for(texts)
        try:
            matrix = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("router card cache %s unreadable, re-embedding: %s", path, exc)
            return None
        rows_ok = not check_rows or (matrix.ndim == 2 and matrix.shape[0] == len(texts))
        if matrix.ndim != 2 or not rows_ok or matrix.dtype != np.float32:
            logger.warning("router card cache %s has shape %s, re-embedding", path, matrix.shape)
            return None
        out: _F32 = matrix
        return out

    def save(self, texts: Sequence[str], matrix: _F32) -> None:
        """Store ``matrix`` for ``texts`` (atomically); errors are logged, not raised."""
        path = self.path_for(texts)
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._folder, prefix=".cards-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.save(fh, np.ascontiguousarray(matrix, dtype=np.float32))
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            logger.warning("router card cache %s not written: %s", path, exc)
