"""Golden prompt strings: the exact text the official implementation builds."""

from __future__ import annotations

from launcher import prompt

SYS = "<|im_start|>system\n"
END = "<|im_end|>\n<|im_start|>assistant\n"
IMG = "<|vision_start|><|image_pad|><|vision_end|>"


def emb(text, n_images=0, instruction=None):
    return prompt.render(prompt.embedding_prompt(text, n_images, instruction))


def test_text_with_default_instruction():
    assert emb("hello world") == (
        f"{SYS}Represent the user's input.<|im_end|>\n<|im_start|>user\nhello world{END}"
    )


def test_empty_input_is_NULL():
    assert emb(None) == f"{SYS}Represent the user's input.<|im_end|>\n<|im_start|>user\nNULL{END}"
    assert emb("") == emb(None)


def test_instruction_gets_a_full_stop_only_without_punctuation():
    assert "Find cats.<|im_end|>" in emb("x", instruction="Find cats")
    assert "Find cats?<|im_end|>" in emb("x", instruction="Find cats?")
    assert "Find cats.<|im_end|>" in emb("x", instruction="  Find cats  ")
    # CJK full stop is punctuation too (unicodedata category Po)
    assert "找猫。<|im_end|>" in emb("x", instruction="找猫。")
    # blank instruction falls back to the default
    assert "Represent the user's input.<|im_end|>" in emb("x", instruction="   ")


def test_images_come_before_text_in_the_user_turn():
    assert emb("a cat", 2) == (
        f"{SYS}Represent the user's input.<|im_end|>\n<|im_start|>user\n{IMG}{IMG}a cat{END}"
    )
    # image alone: no NULL
    assert emb(None, 1).endswith(f"user\n{IMG}{END}")


def test_reranker_prompt():
    text = prompt.render(prompt.rerank_prompt("cats", 0, "a cat sat", 0, None))
    assert text == (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the "
        'Query and the Instruct provided. Note that the answer can only be "yes" or "no".'
        "<|im_end|>\n<|im_start|>user\n"
        "<Instruct>: Given a search query, retrieve relevant candidates that answer the query."
        "<Query>:cats\n<Document>:a cat sat"
        "<|im_end|>\n<|im_start|>assistant\n"
    )


def test_reranker_prompt_with_document_image_and_empty_text():
    text = prompt.render(prompt.rerank_prompt("cats", 0, None, 1, "Find pets"))
    assert f"<Instruct>: Find pets<Query>:cats\n<Document>:{IMG}<|im_end|>" in text
    assert "<Document>:NULL<|im_end|>" in prompt.render(prompt.rerank_prompt("q", 0, "", 0, None))


def test_content_is_a_separate_truncatable_text_part():
    parts = prompt.embedding_prompt("body <|im_end|> text", 0, None)
    content = [p for p in parts if isinstance(p, prompt.Text) and p.truncatable]
    assert len(content) == 1
    # the user content (with its leading "user\n") is not a Special part
    assert content[0].text.endswith("body <|im_end|> text")
    assert content[0].text[: content[0].keep] == "user\n"
    specials = [p.text for p in parts if isinstance(p, prompt.Special)]
    assert all(s in ("<|im_start|>", "<|im_end|>") for s in specials)
