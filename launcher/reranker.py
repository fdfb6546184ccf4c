"""Qwen3-VL-Reranker on llama.cpp: P(yes) for (query, document) pairs.

Two kinds of GGUF conversions exist:

* ``rank-head``: pooling type RANK with classifier labels ``[yes, no]`` (tensor
  ``cls.output.weight``); llama.cpp applies the head and a softmax over the two labels at
  the last token, so the ``yes`` entry is the score directly.
* ``yes-no-logits``: a plain generative conversion; the score is
  ``sigmoid(logit(yes) - logit(no))`` at the last position, as the official code computes.

``Reranker.method`` says which one a loaded model uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import native, prompt
from .engine import Prepared, QwenEngine
from .errors import InputError, LauncherError, WrongArchitecture
from .inputs import RerankDoc

RANK_HEAD = "rank-head"
YES_NO_LOGITS = "yes-no-logits"
POOLING_RANK = 4


class Reranker(QwenEngine):
    """Scores documents (text, images, or both) against a query with Qwen3-VL-Reranker."""

    what = "a Qwen3-VL reranker model"

    def __init__(
        self,
        model_path: str | Path,
        mmproj_path: str | Path | None = None,
        *,
        instruction: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_path, mmproj_path, **kwargs)
        self.instruction = (instruction or "").strip() or prompt.DEFAULT_RERANK_INSTRUCTION
        pooling = self.meta.get(f"{self.meta.architecture}.pooling_type")
        has_head = pooling == POOLING_RANK or "cls.output.weight" in self.meta.tensor_names
        labels = [label.strip().lower() for label in self.model.cls_labels()] if has_head else []
        if has_head and "yes" in labels and self.model.n_cls_out >= 2:
            self.method = RANK_HEAD
            self._yes_label = labels.index("yes")
        elif has_head:
            self.close()
            raise WrongArchitecture(
                f"{model_path} has a rank head with labels {labels or '(none)'}; "
                "expected the labels [yes, no]"
            )
        else:
            self.method = YES_NO_LOGITS
            yes, no = self.model.token_id("yes"), self.model.token_id("no")
            if yes is None or no is None:
                self.close()
                raise WrongArchitecture(
                    f"{model_path} has no single 'yes'/'no' tokens; is it a Qwen3 reranker?"
                )
            self._yes_no = (yes, no)

    @property
    def embeddings_mode(self) -> bool:  # type: ignore[override]
        return self.method == RANK_HEAD

    def _pooling(self) -> int:
        import llama_cpp.llama_cpp as ll

        return int(
            ll.LLAMA_POOLING_TYPE_RANK if self.method == RANK_HEAD else ll.LLAMA_POOLING_TYPE_NONE
        )

    def _read(self, ctx: native.Context, seq: int, row: int) -> np.ndarray:
        if self.method == RANK_HEAD:
            probs = ctx.seq_embedding(seq, self.model.n_cls_out)
            return np.array([probs[self._yes_label]], dtype=np.float64)
        logits = ctx.logits(row).astype(np.float64)
        yes, no = self._yes_no
        return np.array([1.0 / (1.0 + np.exp(-(logits[yes] - logits[no])))])

    def prompt_text(self, query: str, doc: RerankDoc | str) -> str:
        d = RerankDoc.of(doc)
        return prompt.render(
            prompt.rerank_prompt(query, 0, d.text, len(d.images), self.instruction)
        )

    def score_each(
        self,
        query: str | None,
        docs: Sequence[RerankDoc | str],
        *,
        query_images: Sequence[Any] = (),
        instruction: str | None = None,
    ) -> list[float | InputError]:
        """P(yes) per document, in order, or that document's ``InputError``."""
        documents = [RerankDoc.of(d) for d in docs]
        self._require_vision(len(query_images) + sum(len(d.images) for d in documents))
        instr = (instruction or "").strip() or self.instruction
        q_images = [self.prepare_image(src) for src in query_images]
        results: dict[int, np.ndarray | InputError] = {}
        prepared: list[Prepared] = []
        for i, doc in enumerate(documents):
            try:
                d_images = [self.prepare_image(src) for src in doc.images]
                parts = prompt.rerank_prompt(query, len(q_images), doc.text, len(d_images), instr)
                prepared.append(Prepared(i, self.tokenize_parts(parts, q_images + d_images)))
            except InputError as err:
                results[i] = err
        results.update(self.run_all(prepared))
        out: list[float | InputError] = []
        for i in range(len(documents)):
            r = results[i]
            out.append(r if isinstance(r, InputError) else float(r[0]))
        return out

    def score(
        self, query: str | None, docs: Sequence[RerankDoc | str], **kwargs: Any
    ) -> list[float]:
        """Like ``score_each`` but raises the first document's error."""
        out = self.score_each(query, docs, **kwargs)
        for r in out:
            if isinstance(r, LauncherError):
                raise r
        return [float(r) for r in out]  # type: ignore[arg-type]
