"""Which engine kind runs a request: the manifest says which kinds can run a model, the request says
what it needs, the ``engine`` setting says which kind is preferred.

A model stored with a GGUF file lists ``llamacpp`` (and ``hf`` when it also has safetensors weights);
generation goes to the first kind the manifest lists unless the setting names another it can run.
What llama.cpp cannot do falls back to the transformers engine, and says why: adapters llama.cpp
cannot express (other PEFT methods, DoRA, trained whole modules: ``engines.llamacpp_lora``), label
scoring for prompt-defined classifiers, embeddings, classification and tagging, and tool calls that
a free reply may open (llama.cpp's sampler runs llguidance grammars, which it cannot apply lazily).
Forced tool calls, JSON schemas and log-probabilities run on either.

Workers and the resource manager key engines by ``engine_key``: the model's ref for the transformers
engine (as before there were two kinds), ``ref@kind`` for any other, so one model may be loaded in
both engines at once (chat on llama.cpp, prompt-task scoring on transformers).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmos.errors import InvalidInput
from llmos.store.manifest import ManifestData

HF = "hf"
LLAMACPP = "llamacpp"
KINDS = (HF, LLAMACPP)
_SEP = "@"  # never in a model name (names.py allows only [A-Za-z0-9._-] and one ':')


@dataclass(frozen=True)
class Placement:
    engine: str
    note: str | None = None  # why it is not the preferred engine, when it is not


def engine_key(ref: str, engine: str) -> str:
    return ref if engine == HF else f"{ref}{_SEP}{engine}"


def split_key(key: str) -> tuple[str, str]:
    """``(ref, engine)`` of an engine key."""
    ref, sep, engine = key.partition(_SEP)
    return (ref, engine) if sep else (key, HF)


def runnable_by(manifest: ManifestData) -> list[str]:
    """Engine kinds that can run the model, preferred first (manifests from before kinds existed: hf)."""
    return list(manifest.engines) or [HF]


def preferred(manifest: ManifestData, setting: str) -> str:
    """The kind that serves plain generation: the setting's kind when the model lists it, else the
    manifest's first."""
    kinds = runnable_by(manifest)
    return setting if setting in kinds else kinds[0]


def place(manifest: ManifestData, setting: str, *, task: str, adapter: bool, scores: bool,
          needs: str | None = None, adapter_unsupported: str | None = None) -> Placement:
    """The engine for one request on a model with ``manifest``.

    ``adapter``: the request runs a LoRA adapter over this model; ``adapter_unsupported``: what about it
    llama.cpp cannot serve, in words (None: llama.cpp serves it).
    ``scores``: the request needs label scoring (a prompt-defined classifier over a generator).
    ``needs``: what else the request asks that only the transformers engine does, in words.
    """
    kinds = runnable_by(manifest)
    first = preferred(manifest, setting)
    if first != LLAMACPP:
        return Placement(first)
    reason = None
    if adapter and adapter_unsupported is not None:
        reason = f"{adapter_unsupported} run on the hf engine"
    elif scores:
        reason = "label scoring runs on the hf engine"
    elif task != "generate":
        reason = f"{task} runs on the hf engine"
    elif needs is not None:
        reason = f"{needs} runs on the hf engine"
    if reason is None:
        return Placement(LLAMACPP)
    if HF not in kinds:
        raise InvalidInput(f"this model is stored for llama.cpp only, and {reason}; import its Hugging Face "
                           "folder to use it for that")
    return Placement(HF, reason)


def check_kind(engine: str) -> str:
    if engine not in KINDS:
        raise InvalidInput(f"unknown engine {engine!r}; choose one of: {', '.join(KINDS)}", param="engine")
    return engine
