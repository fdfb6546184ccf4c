"""The engine against an independent numpy implementation of the official protocol.

The prompt strings here are written out by hand from the official code (not built with
``launcher.prompt``), tokenized by an independent byte-level BPE and run through a numpy
Qwen3 decoder that reads the GGUF weights. The engine must agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference as R

from launcher import synth
from launcher.embedder import Embedder
from launcher.inputs import EmbedInput
from launcher.reranker import RANK_HEAD, YES_NO_LOGITS, Reranker

SYSTEM_RERANK = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".'
)
DEFAULT_RERANK_INSTRUCTION = (
    "Given a search query, retrieve relevant candidates that answer the query."
)


def official_embedding_prompt(text: str, instruction: str = "Represent the user's input.") -> str:
    return (
        f"<|im_start|>system\n{instruction}<|im_end|>\n"
        f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    )


def official_rerank_prompt(
    query: str, doc: str, instruction: str = DEFAULT_RERANK_INSTRUCTION
) -> str:
    return (
        f"<|im_start|>system\n{SYSTEM_RERANK}<|im_end|>\n<|im_start|>user\n"
        f"<Instruct>: {instruction}<Query>:{query}\n<Document>:{doc}"
        "<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.fixture(scope="module")
def tok():
    return R.BPETokenizer(synth.byte_vocab())


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.\n\nSecond paragraph, with numbers 12345.",
    "  leading spaces and\ttabs",
    "NULL",
]


@pytest.mark.parametrize("text", TEXTS)
def test_text_embedding_matches_reference(tiny_models, tok, text):
    ids = tok.encode(official_embedding_prompt(text))
    hidden, _ = R.forward(tiny_models.embedding, ids)
    with Embedder(tiny_models.embedding, threads=2) as emb:
        got = emb.embed([text])[0]
    assert float(unit(hidden) @ got) > 0.9999


def test_instruction_punctuation_matches_reference(tiny_models, tok):
    ids = tok.encode(official_embedding_prompt("cats", "Find pictures of animals."))
    hidden, _ = R.forward(tiny_models.embedding, ids)
    with Embedder(tiny_models.embedding, threads=2) as emb:
        got = emb.embed([EmbedInput(text="cats", instruction="Find pictures of animals")])[0]
    assert float(unit(hidden) @ got) > 0.9999


def test_empty_input_matches_reference_NULL(tiny_models, tok):
    hidden, _ = R.forward(tiny_models.embedding, tok.encode(official_embedding_prompt("NULL")))
    with Embedder(tiny_models.embedding, threads=2) as emb:
        got = emb.embed([""])[0]
    assert float(unit(hidden) @ got) > 0.9999


def test_dims_match_reference(tiny_models, tok):
    hidden, _ = R.forward(
        tiny_models.embedding, tok.encode(official_embedding_prompt("matryoshka"))
    )
    with Embedder(tiny_models.embedding, threads=2) as emb:
        got = emb.embed(["matryoshka"], dims=24)[0]
    assert float(unit(hidden[:24]) @ got) > 0.9999


PAIRS = [("cats", "a cat sat on the mat"), ("invoice 2024", "the dog barked"), ("q", "")]


@pytest.mark.parametrize("query,doc", PAIRS)
def test_generative_reranker_matches_sigmoid_of_reference_logits(tiny_models, tok, query, doc):
    text = official_rerank_prompt(query, doc or "NULL")
    _, logits = R.forward(tiny_models.generative, tok.encode(text))
    yes, no = tok.encode("yes", parse_special=False), tok.encode("no", parse_special=False)
    assert len(yes) == len(no) == 1
    margin = logits[yes[0]] - logits[no[0]]
    with Reranker(tiny_models.generative, threads=2) as rr:
        assert rr.method == YES_NO_LOGITS
        score = rr.score(query, [doc])[0]
    # compare on the logit scale: the margin is large for random weights
    got_margin = np.log(score) - np.log1p(-score) if score < 1 else np.inf
    assert abs(got_margin - margin) <= 2e-2 * max(1.0, abs(margin))


@pytest.mark.parametrize("query,doc", PAIRS)
def test_rank_head_reranker_matches_reference(tiny_models, tok, query, doc):
    text = official_rerank_prompt(query, doc or "NULL")
    expected = R.rank_scores(tiny_models.rank, tok.encode(text))
    with Reranker(tiny_models.rank, threads=2) as rr:
        assert rr.method == RANK_HEAD
        score = rr.score(query, [doc])[0]
    assert abs(score - expected[0]) <= 1e-3


def test_reranker_instruction_matches_reference(tiny_models, tok):
    text = official_rerank_prompt("cats", "a cat", "Find pets")
    expected = R.rank_scores(tiny_models.rank, tok.encode(text))
    with Reranker(tiny_models.rank, threads=2, instruction="Find pets") as rr:
        score = rr.score("cats", ["a cat"])[0]
    assert abs(score - expected[0]) <= 1e-3
