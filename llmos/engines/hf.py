"""The default engine: a local transformers model, LoRA adapters through PEFT, on one device.

Generation runs at iteration level over one live batch (``livebatch.LiveBatch``): ``prefill`` adds
sequences between steps, ``decode`` advances any subset of them, and rows for different adapters
share each forward pass. Embedding, classification and tagging run as plain batched forward passes.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers.cache_utils import DynamicCache

from llmos.engines.adapters import AdapterSet
from llmos.engines.base import ChatMessage, Engine, EngineInfo, Span
from llmos.engines.encoder_tasks import class_probs, mean_pool, tag_spans
from llmos.engines.hf_loading import cache_kwarg, load_model
from llmos.engines.livebatch import LiveBatch
from llmos.engines.logprobs import TokenTexts, step_logprobs
from llmos.engines.prompts import chat_prompt_ids
from llmos.engines.sampling import (
    IncrementalDetokenizer,
    SeqState,
    StopMatcher,
    advance,
    check_params,
    make_generator,
    pick_tokens,
)
from llmos.engines.structured import GrammarBackend
from llmos.errors import Conflict, EngineFailed, InvalidInput, LlmosError, Unavailable, WrongTask
from llmos.engines.types import OutputConstraint, RequestStatus, SequenceSpec, StepOutput


class HFEngine(Engine):
    """One transformers model folder (safetensors) plus its LoRA adapters.

    ``tasks`` narrows what the model is used for (default: everything its head allows);
    ``chat_template`` is the template stored with the model (default: the tokenizer's).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str,
        tasks: list[str] | None = None,
        chat_template: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        max_batch_size: int = 32,
    ) -> None:
        if max_batch_size < 1:
            raise InvalidInput(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.name = name
        self.max_batch_size = max_batch_size
        self._device = _parse_device(device)
        self._m = load_model(path, tasks=tasks, chat_template=chat_template, dtype=dtype, device=self._device)
        self._config = self._m.model.config
        self._cache_kw = cache_kwarg(self._m.model)  # "cache", or "past_key_values" before transformers renamed it
        self._vocab = self._m.model.get_input_embeddings().num_embeddings
        self._adapters = AdapterSet(self._m.model, self._device)
        pad = self._m.tokenizer.pad_token_id
        self._batch = LiveBatch(self._new_cache, self._device, pad_id=pad if pad is not None else 0)
        self._seqs: dict[str, SeqState] = {}
        self._grammar = GrammarBackend(self._m.tokenizer, self._vocab, self._m.eos_ids)
        self._texts: TokenTexts | None = None
        self._closed = False

    # -- description --------------------------------------------------------------------------
    def info(self) -> EngineInfo:
        self._require()
        m = self._m
        return EngineInfo(
            self.name, list(m.tasks), m.context_length, self.footprint(), self._adapters.names(), list(m.labels)
        )

    def footprint(self) -> int:
        if self._closed:
            return 0
        model = self._adapters.model
        weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        return weights + self._batch.nbytes()

    # -- tokenisation -------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return list(self._m.tokenizer.encode(text))

    def encode_chat(self, messages: list[ChatMessage]) -> list[int]:
        return chat_prompt_ids(self._m.tokenizer, self._m.chat_template, messages, self.name)

    # -- adapters -----------------------------------------------------------------------------
    def add_adapter(self, name: str, path: str) -> None:
        self._require()
        self._adapters.add(name, path)

    def remove_adapter(self, name: str) -> None:
        self._require()
        if name in self._batch.adapters_of(self._batch.ids):
            raise Conflict(f"adapter {name!r} is in use by live sequences; release them first")
        self._adapters.remove(name)

    # -- generation ---------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, seqs: list[SequenceSpec]) -> list[StepOutput]:
        self._require("generate")
        if not seqs:
            return []
        self._check_new(seqs)
        states = [self._new_state(s) for s in seqs]
        with _engine_errors("prefill"):
            logits = self._batch.prefill(
                [s.id for s in seqs], [s.prompt_ids for s in seqs], [s.adapter for s in seqs], self._forward
            )
        self._seqs.update((s.spec.id, s) for s in states)
        return self._emit(states, logits)

    @torch.inference_mode()
    def decode(self, ids: list[str]) -> list[StepOutput]:
        self._require("generate")
        if not ids:
            return []
        states = self._live_states(ids)
        with _engine_errors("decode"):
            logits = self._batch.step(ids, self._forward)
        return self._emit(states, logits)

    @torch.inference_mode()
    def release(self, ids: list[str]) -> None:
        self._batch.remove(ids)
        for seq_id in ids:
            self._seqs.pop(seq_id, None)

    def _new_cache(self) -> DynamicCache:
        return DynamicCache(config=self._config)

    def _forward(self, input_ids, attention_mask, position_ids, cache, adapters) -> torch.Tensor:
        out = self._adapters.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **{self._cache_kw: cache},
            use_cache=True,
            logits_to_keep=1,  # only the last position is sampled: skip the vocab projection elsewhere
            **self._adapters.forward_kwargs(adapters),
        )
        return out.logits[:, -1, :]

    def check_constraint(self, constraint: OutputConstraint) -> None:
        self._require("generate")
        self._grammar.compile(constraint)

    def _emit(self, states: list[SeqState], logits: torch.Tensor) -> list[StepOutput]:
        matchers = [s.matcher for s in states]
        wanted = [s.spec.params.logprobs for s in states]
        constrained = any(m is not None for m in matchers)
        # Log-probabilities are the model's own: taken before the grammar masks anything.
        raw = logits.clone() if constrained and any(k is not None for k in wanted) else logits
        try:
            if constrained:
                self._grammar.mask(logits, matchers)
            tokens = pick_tokens(logits, [s.spec.params for s in states], [s.generator for s in states])
        except RuntimeError as exc:  # e.g. NaN probabilities: these sequences cannot go on
            return self._fail(states, f"sampling failed: {exc}")
        # A sound mask never lets a matcher refuse; if one does, that sequence ends rather than run free.
        refused = {s.spec.id for s, t in zip(states, tokens) if s.matcher is not None and not s.matcher.accept_token(t)}
        logprobs = step_logprobs(raw, tokens, wanted, self._token_texts()) if any(
            k is not None for k in wanted) else [None] * len(states)
        self._batch.set_next([s.spec.id for s in states], tokens)
        outputs = [self._fail([s], "the constrained output could not continue")[0] if s.spec.id in refused
                   else advance(s, t, self._m.eos_ids, self._m.context_length) for s, t in zip(states, tokens)]
        for out, lp in zip(outputs, logprobs):
            if lp is not None and not out.error and out.token_id not in self._m.eos_ids:
                out.logprobs = lp
        # Finished rows leave the cache now, so the next decode over the unfinished ones is again a
        # step over every row (the fast path) even before the kernel calls release().
        self._batch.remove([o.id for o in outputs if o.finished])
        return outputs

    def _token_texts(self) -> TokenTexts:
        if self._texts is None:
            self._texts = TokenTexts(self._grammar.token_bytes())
        return self._texts

    def _fail(self, states: list[SeqState], error: str) -> list[StepOutput]:
        self._batch.remove([s.spec.id for s in states])
        for state in states:
            state.finished = True
        status = RequestStatus.FINISHED_ERROR
        return [StepOutput(s.spec.id, -1, "", True, status, error) for s in states]

    def _check_new(self, seqs: list[SequenceSpec]) -> None:
        ids = [s.id for s in seqs]
        if len(set(ids)) != len(ids):
            raise InvalidInput("prefill got the same sequence id twice")
        for spec in seqs:
            self._check_spec(spec)
        if len(self._batch) + len(seqs) > self.max_batch_size:
            raise Unavailable(
                f"engine {self.name!r} is generating {len(self._batch)} sequences; "
                f"{len(seqs)} more would exceed max_batch_size={self.max_batch_size}"
            )

    def _check_spec(self, spec: SequenceSpec) -> None:
        if spec.id in self._seqs:
            raise InvalidInput(f"sequence {spec.id!r} is already live")
        prompt = spec.prompt_ids
        if not prompt:
            raise InvalidInput(f"sequence {spec.id!r} has an empty prompt")
        if len(prompt) >= self._m.context_length:
            raise InvalidInput(
                f"prompt of {len(prompt)} tokens leaves no room in the {self._m.context_length}-token context"
            )
        if min(prompt) < 0 or max(prompt) >= self._vocab:
            raise InvalidInput(f"prompt token ids must be in [0, {self._vocab})")
        check_params(spec.params)
        self._adapters.check(spec.adapter)

    def _new_state(self, spec: SequenceSpec) -> SeqState:
        return SeqState(
            spec=spec,
            generator=make_generator(spec.params, self._device),
            detok=IncrementalDetokenizer(self._m.tokenizer, spec.prompt_ids),
            stops=StopMatcher(spec.params.stop),
            matcher=self._grammar.matcher(spec.params.constraint) if spec.params.constraint else None,
        )

    def _live_states(self, ids: list[str]) -> list[SeqState]:
        if len(set(ids)) != len(ids):
            raise InvalidInput("decode got the same sequence id twice")
        states = []
        for seq_id in ids:
            state = self._seqs.get(seq_id)
            if state is None:
                raise InvalidInput(f"sequence {seq_id!r} is not live (never prefilled, or released)")
            if state.finished:
                raise InvalidInput(f"sequence {seq_id!r} has finished; release it")
            states.append(state)
        return states

    @torch.inference_mode()
    def score(self, contexts: list[list[int]], continuations: list[list[int]], *,
              adapter: str | None = None) -> list[list[list[float]]]:
        self._require("generate")
        self._adapters.check(adapter)
        self._check_scored(contexts, continuations)
        out: list[list[list[float]]] = []
        for start in range(0, len(contexts), self.max_batch_size):
            with _engine_errors("score"):
                out.extend(self._score_chunk(contexts[start : start + self.max_batch_size], continuations, adapter))
        return out

    def _check_scored(self, contexts: list[list[int]], continuations: list[list[int]]) -> None:
        if not contexts or not continuations or not all(contexts) or not all(continuations):
            raise InvalidInput("score needs non-empty contexts and continuations")
        longest = max(map(len, contexts)) + max(map(len, continuations))
        if longest > self._m.context_length:
            raise InvalidInput(f"a context with its continuation needs {longest} tokens; the model's context "
                               f"is {self._m.context_length}")
        ids = [t for seq in (*contexts, *continuations) for t in seq]
        if min(ids) < 0 or max(ids) >= self._vocab:
            raise InvalidInput(f"token ids must be in [0, {self._vocab})")

    def _score_chunk(self, contexts: list[list[int]], continuations: list[list[int]],
                     adapter: str | None) -> list[list[list[float]]]:
        """Run the left-padded contexts once, then each continuation over a copy-free crop of their cache."""
        width, rows = max(map(len, contexts)), len(contexts)
        ids = torch.zeros((rows, width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, ctx in enumerate(contexts):
            ids[row, width - len(ctx):] = torch.tensor(ctx)
            mask[row, width - len(ctx):] = 1
        ids, mask = ids.to(self._device), mask.to(self._device)
        lengths = mask.sum(dim=-1, keepdim=True)
        cache, extra = self._new_cache(), self._adapters.forward_kwargs([adapter] * rows)
        out = self._adapters.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                                   use_cache=True, logits_to_keep=1, **{self._cache_kw: cache}, **extra)
        first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        scores: list[list[list[float]]] = [[] for _ in contexts]
        for cont in continuations:
            logprobs = [first[:, cont[0]]]
            if len(cont) > 1:
                step = torch.tensor(cont[:-1], device=self._device).expand(rows, -1)
                more = self._adapters.model(
                    input_ids=step, attention_mask=torch.cat([mask, torch.ones_like(step)], dim=-1),
                    position_ids=lengths + torch.arange(len(cont) - 1, device=self._device),
                    use_cache=True, **{self._cache_kw: cache}, **extra).logits.float().log_softmax(dim=-1)
                targets = torch.tensor(cont[1:], device=self._device).expand(rows, -1).unsqueeze(-1)
                logprobs += list(more.gather(-1, targets).squeeze(-1).unbind(dim=-1))
                cache.crop(-(len(cont) - 1))  # back to the contexts alone
            for row, values in enumerate(torch.stack(logprobs, dim=-1).tolist()):
                scores[row].append(values)
        return scores

    # -- encoder tasks ------------------------------------------------------------------------
    @torch.inference_mode()
    def embed(self, texts: list[str], *, adapter: str | None = None) -> list[list[float]]:
        vectors: list[list[float]] = []
        for _, enc, out in self._encoder_batches("embed", texts, adapter):
            hidden = out.last_hidden_state if self._m.kind == "encoder" else out.hidden_states[-1]
            vectors.extend(mean_pool(hidden, enc["attention_mask"]).tolist())
        return vectors

    @torch.inference_mode()
    def classify(self, texts: list[str], *, adapter: str | None = None) -> list[dict[str, float]]:
        multi = getattr(self._config, "problem_type", None) == "multi_label_classification"
        results: list[dict[str, float]] = []
        for _, _, out in self._encoder_batches("classify", texts, adapter):
            results.extend(class_probs(out.logits, self._m.labels, multi_label=multi))
        return results

    @torch.inference_mode()
    def tag(self, texts: list[str], *, adapter: str | None = None) -> list[list[Span]]:
        results: list[list[Span]] = []
        for chunk, enc, out in self._encoder_batches("tag", texts, adapter):
            results.extend(tag_spans(chunk, enc, out.logits, self._m.labels))
        return results

    def _encoder_batches(self, task: str, texts: list[str], adapter: str | None) -> Iterator[tuple]:
        """(texts, tokenised texts, model output) for each chunk of at most max_batch_size texts."""
        self._require(task)
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InvalidInput(f"{task} takes a list of strings")
        self._adapters.check(adapter)
        for start in range(0, len(texts), self.max_batch_size):
            chunk = texts[start : start + self.max_batch_size]
            enc = self._m.tokenizer(
                chunk,
                padding=True,
                truncation=True,
                max_length=self._m.max_input_len,
                return_tensors="pt",
                return_offsets_mapping=task == "tag",
            ).to(self._device)
            inputs = {k: v for k, v in enc.items() if k != "offset_mapping"}
            with _engine_errors(task):
                out = self._adapters.model(
                    **inputs,
                    output_hidden_states=task == "embed" and self._m.kind != "encoder",
                    **self._adapters.forward_kwargs([adapter] * len(chunk)),
                )
            yield chunk, enc, out

    # -- life cycle ---------------------------------------------------------------------------
    def _require(self, task: str | None = None) -> None:
        if self._closed:
            raise EngineFailed(f"engine {self.name!r} is closed")
        if task is not None and task not in self._m.tasks:
            raise WrongTask(
                f"model {self.name!r} cannot {task}; it can {', '.join(self._m.tasks)}", tasks=list(self._m.tasks)
            )

    def close(self) -> None:
        self._batch.clear()
        self._seqs.clear()
        self._closed = True
        self._adapters = None
        self._m.model = None
        gc.collect()


def _parse_device(device: str) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInput(f"unknown device {device!r}") from exc


@contextmanager
def _engine_errors(what: str) -> Iterator[None]:
    """Let llmos errors through; report anything else as the engine failing."""
    try:
        yield
    except LlmosError:
        raise
    except Exception as exc:
        raise EngineFailed(f"{what} failed: {type(exc).__name__}: {exc}") from exc
