"""A chat model whose tokenizer has no padding token (some GGUF conversions leave it without one) still
fine-tunes: batches are padded with its end token, masked, with no labels on the padding."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from llmos.train.sft import SftTask, encode_pair
from llmos.train.task_kinds import IGNORE


def test_a_tokenizer_without_a_pad_token_pads_with_its_end_token(smollm2_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    tok.pad_token = None
    assert tok.pad_token_id is None
    rows = [encode_pair(tok, "Say hi.", "Hi!", 64), encode_pair(tok, "Print hello in Python, please.",
                                                            "print('hello')", 64)]
    batch = SftTask().collator(tok)([r for r in rows if r is not None])
    assert tok.pad_token_id == tok.eos_token_id
    short = int(batch["attention_mask"][0].sum())
    width = batch["input_ids"].shape[1]
    assert short < width
    assert batch["input_ids"][0, short:].tolist() == [tok.eos_token_id] * (width - short)
    assert batch["labels"][0, short:].tolist() == [IGNORE] * (width - short)
