"""Supervised fine-tuning of a chat model: learn the assistant's answers, in the model's own chat format.

Each row is rendered with the chat template stored with the base model (the same one the engine uses
to serve it, and the one stored with the result): the prompt is the conversation up to the answer
plus the template's generation prompt; the target is the rest of the rendered text (the answer and the
template's end-of-turn marker, so the model learns to stop). Only target tokens carry a loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.data.rows import Row, SftRow, Task
from llmos.errors import InvalidInput, WrongTask
from llmos.train.task_kinds import IGNORE, TrainTask, quiet_load, register_task

if TYPE_CHECKING:
    from llmos.store.manifest import ModelInfo
    from llmos.train.report import EvalReport
    from llmos.train.config import TrainConfig


class SftTask(TrainTask):
    name = Task.sft
    head = "causal"
    peft_task_type = "CAUSAL_LM"
    metric = "loss"
    greater_is_better = False

    def check_base(self, base: "ModelInfo") -> None:
        if "generate" not in base.manifest.tasks:
            raise WrongTask(f"model {base.ref} cannot be fine-tuned for sft: it is not a text generator (it "
                            f"serves {', '.join(base.manifest.tasks)}); sft needs a causal language model with a "
                            "chat template, such as smollm2-135m-instruct", param="model")
        if not base.manifest.chat_template:
            raise WrongTask(f"model {base.ref} has no chat template: sft builds its prompts with the model's own "
                            "template (the one that serves it); use an instruct/chat model", param="model")

    def check_rows(self, train: Sequence[Row], labels: list[str], where: str) -> None:
        if not any(target_text(r).strip() for r in train if isinstance(r, SftRow)):
            raise InvalidInput(f"{where} has no row with an answer to learn (every output is empty)",
                               param="dataset")

    def load_model(self, folder: Path, labels: list[str], tokenizer: Any) -> Any:
        from transformers import AutoModelForCausalLM

        return quiet_load(AutoModelForCausalLM, folder)

    def encode(self, rows: Sequence[Row], tokenizer: Any, labels: list[str], cfg: "TrainConfig",
               chat_template: str | None) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            prompt, answer = render(tokenizer, chat_template, row)  # type: ignore[arg-type]
            item = encode_pair(tokenizer, prompt, answer, cfg.max_length)
            if item is not None:
                out.append(item)
        return out

    def collator(self, tokenizer: Any) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        from transformers import DataCollatorForSeq2Seq

        if tokenizer.pad_token_id is None:  # some GGUF conversions leave a chat model without one
            if tokenizer.eos_token is None:
                raise InvalidInput("the model's tokenizer has neither a padding nor an end token to pad "
                                   "batches with", param="model")
            tokenizer.pad_token = tokenizer.eos_token  # padded positions are masked and carry no labels
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE, padding=True)

    def report(self, model: Any, tokenizer: Any, rows: Sequence[Row], labels: list[str], cfg: "TrainConfig",
               chat_template: str | None) -> "EvalReport":
        return sft_report(model, tokenizer, rows, chat_template, cfg)


def target_text(row: SftRow) -> str:
    return row.messages[-1].content if row.messages else row.output


def render(tokenizer: Any, chat_template: str | None, row: SftRow) -> tuple[str, str]:
    """(prompt text, answer text) of a row in the model's chat format."""
    if not chat_template:
        raise InvalidInput("sft needs the model's chat template")
    messages = [{"role": m.role, "content": m.content} for m in row.to_messages()]
    full = tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False)
    prompt = prompt_text(tokenizer, chat_template, row)
    if not full.startswith(prompt):
        # A template that renders a turn differently once an answer follows: fall back to the answer alone.
        return prompt, messages[-1]["content"] + (tokenizer.eos_token or "")
    return prompt, full[len(prompt):]


def prompt_text(tokenizer: Any, chat_template: str | None, row: SftRow) -> str:
    """The conversation before the answer, ending where the model starts to write (as served)."""
    messages = [{"role": m.role, "content": m.content} for m in row.to_messages()[:-1]]
    return tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False,
                                         add_generation_prompt=True)


def encode_pair(tokenizer: Any, prompt: str, answer: str, max_length: int) -> dict[str, Any] | None:
    """Token ids of prompt + answer with labels on the answer only; the prompt's start is cut first.

    None when no answer token fits (the row teaches nothing).
    """
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not a_ids:
        return None
    keep_prompt = min(len(p_ids), max(max_length // 2, max_length - len(a_ids)))
    p_ids = p_ids[len(p_ids) - keep_prompt:] if keep_prompt else []
    a_ids = a_ids[: max_length - len(p_ids)]
    if not a_ids:
        return None
    ids = p_ids + a_ids
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [IGNORE] * len(p_ids) + a_ids}


register_task(SftTask())


# -- the sft report ------------------------------------------------------------------------------------------
def sft_report(model: Any, tokenizer: Any, rows: Sequence[Row], chat_template: str | None, cfg: Any) -> "EvalReport":
    """Teacher-forced answer loss, then greedy answers scored by exact match, token F1 and chrF (sacrebleu,
    0..1; also per row, for the loop's paired gate)."""
    from llmos.train.evaluate import REPORT_SAMPLES, generate, normalise_answer, token_f1
    from llmos.train.report import EvalReport, SampleAnswer

    chats = [r for r in rows if isinstance(r, SftRow)]
    loss = answer_loss(model, tokenizer, chats, chat_template, cfg.max_length, cfg.batch_size)
    sample = chats[: cfg.report_rows]
    prompts = [prompt_text(tokenizer, chat_template, r) for r in sample]
    answers = generate(model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size)
    refs = [target_text(r) for r in sample]
    em = sum(normalise_answer(a) == normalise_answer(r) for a, r in zip(answers, refs)) / max(1, len(refs))
    f1 = sum(token_f1(a, r) for a, r in zip(answers, refs)) / max(1, len(refs))
    chrf = chrf_scores(answers, refs)
    samples = [SampleAnswer(prompt=r.to_messages()[-2].content if len(r.to_messages()) > 1 else "", reference=ref,
                            generated=a) for r, ref, a in list(zip(sample, refs, answers))[:REPORT_SAMPLES]]
    return EvalReport(task="sft", rows=len(chats), generated_rows=len(sample), samples=samples,
                      metrics={"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "exact_match": em,
                               "token_f1": f1, "chrf": sum(chrf) / max(1, len(chrf))}, per_row=chrf,
                      answers=answers)


def chrf_scores(answers: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Sentence-level chrF of each answer against its reference, scaled to 0..1."""
    from sacrebleu.metrics import CHRF

    chrf = CHRF()
    return [chrf.sentence_score(a, [r]).score / 100 for a, r in zip(answers, refs)]


def answer_loss(model: Any, tokenizer: Any, rows: Sequence[SftRow], chat_template: str | None, max_length: int,
                batch_size: int) -> float:
    """Mean cross-entropy per answer token, prompts excluded (as trained)."""
    import torch

    with torch.inference_mode():
        return _answer_loss(model, tokenizer, rows, chat_template, max_length, batch_size)


def _answer_loss(model: Any, tokenizer: Any, rows: Sequence[SftRow], chat_template: str | None, max_length: int,
                 batch_size: int) -> float:
    import torch

    from llmos.train.evaluate import batches, model_device

    model.eval()
    items = [encode_pair(tokenizer, *render(tokenizer, chat_template, r), max_length) for r in rows]
    items = [i for i in items if i is not None]
    collate = SftTask().collator(tokenizer)
    total, count = 0.0, 0
    for chunk in batches(items, batch_size):
        batch = {k: v.to(model_device(model)) for k, v in collate(list(chunk)).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        labels = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100,
                                                   reduction="sum")
        total += float(losses)
        count += int((labels != -100).sum())
    return total / max(1, count)
