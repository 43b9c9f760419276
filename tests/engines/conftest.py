"""Engines under test, loaded once per session: SmolLM2 (generate, with and without LoRA adapters),
MiniLM as an encoder, and MiniLM with fresh classification / tagging heads."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from llmos.engines.hf import HFEngine

CLASS_LABELS = {0: "negative", 1: "positive"}
TAG_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


def _engine(path: Path, name: str, **kwargs: object) -> Iterator[HFEngine]:
    engine = HFEngine(path, name=name, **kwargs)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def smol_engine(smollm2_dir: Path) -> Iterator[HFEngine]:
    yield from _engine(smollm2_dir, "smol")


@pytest.fixture(scope="session")
def smol_model(smollm2_dir: Path):
    """The same weights loaded the plain transformers way: the reference for greedy decoding."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_dir, use_safetensors=True).eval()


def _save_lora(base_dir: Path, out: Path, seed: int, **overrides: object) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, use_safetensors=True)
    config = LoraConfig(init_lora_weights=False, r=8, target_modules=["q_proj", "v_proj"], **overrides)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        get_peft_model(base, config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def lora_dirs(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two random (non-zero) LoRA adapters, so each visibly changes what the model says."""
    root = tmp_path_factory.mktemp("loras")
    return {name: _save_lora(smollm2_dir, root / name, seed) for name, seed in (("a1", 1), ("a2", 2))}


@pytest.fixture(scope="session")
def bad_lora_dir(lora_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapter whose config promises rank 4 while its weights have rank 8: fails mid-load."""
    out = tmp_path_factory.mktemp("bad_lora") / "bad"
    shutil.copytree(lora_dirs["a1"], out)
    config = json.loads((out / "adapter_config.json").read_text())
    config["r"] = 4
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="session")
def lora_engine(smollm2_dir: Path, lora_dirs: dict[str, Path]) -> Iterator[HFEngine]:
    engine = HFEngine(smollm2_dir, name="smol-lora")
    for name, path in lora_dirs.items():
        engine.add_adapter(name, str(path))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def small_context_dir(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 with a 32-token context: the weights are linked, only config.json changes."""
    out = tmp_path_factory.mktemp("smol32")
    for item in smollm2_dir.iterdir():
        if item.is_file() and item.name != "config.json":
            (out / item.name).symlink_to(item)
    config = json.loads((smollm2_dir / "config.json").read_text())
    config["max_position_embeddings"] = 32
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="session")
def minilm_engine(minilm_dir: Path) -> Iterator[HFEngine]:
    yield from _engine(minilm_dir, "minilm")


def _save_head(minilm_dir: Path, out: Path, auto_cls, labels: dict[int, str]) -> Path:
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    model = auto_cls.from_pretrained(
        minilm_dir, num_labels=len(labels), id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def classifier_dir(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoModelForSequenceClassification

    return _save_head(minilm_dir, tmp_path_factory.mktemp("cls"), AutoModelForSequenceClassification, CLASS_LABELS)


@pytest.fixture(scope="session")
def tagger_dir(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoModelForTokenClassification

    return _save_head(minilm_dir, tmp_path_factory.mktemp("tag"), AutoModelForTokenClassification, TAG_LABELS)


@pytest.fixture(scope="session")
def classifier_lora_dir(classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sequence-classification LoRA (it also carries its own copy of the classifier head)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(3)
    base = AutoModelForSequenceClassification.from_pretrained(classifier_dir)
    config = LoraConfig(task_type="SEQ_CLS", init_lora_weights=False, r=8, target_modules=["query", "value"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        peft = get_peft_model(base, config)
    with torch.no_grad():  # make the adapter's head differ from the base head too: favour "positive"
        peft.base_model.model.classifier.modules_to_save["default"].bias[1] += 2.0
    out = tmp_path_factory.mktemp("cls_lora") / "c1"
    peft.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def classifier_engine(classifier_dir: Path) -> Iterator[HFEngine]:
    yield from _engine(classifier_dir, "minilm-cls")


@pytest.fixture(scope="session")
def tagger_engine(tagger_dir: Path) -> Iterator[HFEngine]:
    yield from _engine(tagger_dir, "minilm-tag")
