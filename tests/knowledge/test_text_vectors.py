"""Text vectors on disk: read back by another process, keyed by model and text, and rebuilt
(never served) when the file or a value is damaged."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from genesis.knowledge import MiniLMEmbedder, StoredEmbeddings, TextVectorStore

DIM = 8
TEXTS = ["Rotate the key in Settings.", "Refunds take five days.", "Webhooks are signed."]


class CountingEmbedder:
    """Deterministic vectors from a hash of the text; records every text it embeds."""

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.embedded.extend(texts)
        rows = [np.random.default_rng(zlib.crc32(t.encode())).random(DIM) for t in texts]
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), DIM)


def _stored(path: Path, fingerprint: str = "model-a") -> tuple[StoredEmbeddings, CountingEmbedder]:
    embed = CountingEmbedder()
    return StoredEmbeddings(embed, TextVectorStore(path, fingerprint, DIM)), embed


def test_vectors_read_back_equal_what_was_embedded(tmp_path: Path) -> None:
    first, embed = _stored(tmp_path / "v.sqlite")
    written = first.embed_documents(TEXTS)
    first.store.close()
    again, embed_again = _stored(tmp_path / "v.sqlite")
    read = again.embed_documents([*TEXTS, TEXTS[0]])
    assert np.array_equal(read, np.vstack([written, written[:1]]))
    assert embed.embedded == TEXTS and embed_again.embedded == []
    assert (again.hits, again.misses) == (4, 0)


def test_a_second_process_reuses_the_store(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite"
    first, _ = _stored(path)
    written = first.embed_documents(TEXTS)
    np.save(tmp_path / "written.npy", written)
    child = textwrap.dedent(
        f"""
        import numpy as np
        from genesis.knowledge import StoredEmbeddings, TextVectorStore

        def refuse(texts):
            raise AssertionError(f"embedded again: {{texts}}")

        stored = StoredEmbeddings(refuse, TextVectorStore({str(path)!r}, "model-a", {DIM}))
        got = stored.embed_documents({TEXTS!r})
        assert np.array_equal(got, np.load({str(tmp_path / "written.npy")!r}))
        print(stored.hits)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(len(TEXTS))


def test_another_model_or_a_changed_text_is_a_miss(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite"
    first, _ = _stored(path, "model-a")
    first.embed_documents(TEXTS)
    other_model, embed_b = _stored(path, "model-b")
    other_model.embed_documents(TEXTS)
    assert embed_b.embedded == TEXTS
    same_model, embed_a = _stored(path, "model-a")
    same_model.embed_documents([TEXTS[0], TEXTS[1] + " "])
    assert embed_a.embedded == [TEXTS[1] + " "]


def test_warm_embeds_only_what_is_missing_in_batches(tmp_path: Path) -> None:
    stored, embed = _stored(tmp_path / "v.sqlite")
    stored.embed_documents(TEXTS[:1])
    seen: list[tuple[int, int]] = []
    more = [f"sentence {i}" for i in range(5)]
    assert stored.warm(
        [*TEXTS, *more, *more], batch=2, progress=lambda d, t, _: seen.append((d, t))
    )
    assert embed.embedded == [*TEXTS, *more]
    assert seen == [(2, 7), (4, 7), (6, 7), (7, 7)]
    assert stored.warm(TEXTS) == 0


def test_a_damaged_value_is_dropped_and_embedded_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "v.sqlite"
    first, _ = _stored(path)
    written = first.embed_documents(TEXTS)
    first.store.close()
    with sqlite3.connect(path) as db:  # one flipped byte inside the second vector
        (value,) = db.execute("SELECT value FROM vectors LIMIT 1 OFFSET 1").fetchone()
        flipped = bytes(value[:-1]) + bytes([value[-1] ^ 0xFF])
        db.execute("UPDATE vectors SET value = ? WHERE value = ?", (flipped, value))
    again, embed = _stored(path)
    with caplog.at_level(logging.WARNING, logger="genesis.knowledge._text_vectors"):
        read = again.embed_documents(TEXTS)
    assert np.array_equal(read, written)  # the damaged one was embedded again, not served
    assert len(embed.embedded) == 1
    assert "1 damaged value(s) dropped" in caplog.text


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_file_is_set_aside_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    path = tmp_path / "v.sqlite"
    first, _ = _stored(path)
    many = [f"sentence number {i} of a long enough store" for i in range(400)]
    written = first.embed_documents(many)
    first.store.close()
    original = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"this is not a SQLite file at all" * 200)
    else:
        path.write_bytes(original[: len(original) // 3])
    damaged = path.read_bytes()
    again, embed = _stored(path)
    with caplog.at_level(logging.WARNING, logger="genesis.knowledge._text_vectors"):
        read = again.embed_documents(many)
    assert np.array_equal(read, written)  # re-embedded: the same vectors as before
    assert embed.embedded  # nothing read from the damaged file was served
    (aside,) = tmp_path.glob("v.sqlite.corrupt-*")
    assert aside.read_bytes() == damaged  # kept for inspection, not deleted
    assert "is damaged" in caplog.text and str(aside) in caplog.text
    third, embed_third = _stored(path)  # the rebuilt file serves the next process
    assert np.array_equal(third.embed_documents(many), written)
    assert embed_third.embedded == []


def test_stored_vectors_equal_the_real_embedders(tmp_path: Path) -> None:
    model = MiniLMEmbedder()
    sentences = ["To rotate an API key, open Settings.", "Refunds take up to ten days."]
    direct = model.embed_documents(sentences)
    stored = StoredEmbeddings(
        model.embed_documents, TextVectorStore(tmp_path / "v.sqlite", model.fingerprint, model.dim)
    )
    assert np.array_equal(stored.embed_documents(sentences), direct)
    reread = StoredEmbeddings(
        model.embed_documents, TextVectorStore(tmp_path / "v.sqlite", model.fingerprint, model.dim)
    )
    assert np.array_equal(reread.embed_documents(sentences), direct)
    assert reread.misses == 0


def test_the_store_is_bounded_by_evicting_the_oldest(tmp_path: Path) -> None:
    value_bytes = 8 + 4 * DIM  # header + floats
    store = TextVectorStore(tmp_path / "v.sqlite", "model-a", DIM, max_bytes=10 * value_bytes)
    texts = [f"text {i}" for i in range(30)]
    for text in texts:
        store.put_many([text], CountingEmbedder()([text]))
    kept = [t for t, v in zip(texts, store.get_many(texts), strict=True) if v is not None]
    assert 0 < len(kept) <= 10
    assert texts[-1] in kept and texts[0] not in kept


def test_an_unusable_store_only_costs_embedding_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "v.sqlite"
    path.mkdir()  # not a file SQLite can open
    stored, embed = _stored(path)
    with caplog.at_level(logging.WARNING, logger="genesis.knowledge._text_vectors"):
        first = stored.embed_documents(TEXTS)
        again = stored.embed_documents(TEXTS)
    assert np.array_equal(first, again) and embed.embedded == TEXTS + TEXTS
    assert len(caplog.records) == 1 and "unusable" in caplog.text
