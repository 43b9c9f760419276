"""Prompt tasks as stored model versions: a manifest of kind ``prompt_task`` whose parent is its base.

Such a manifest has no files: the spec lives in its lineage, the base's chat template is copied in
(the template used to serve it is stored with it), and its tasks say which route serves it
(``classify``, or ``tag`` for extraction). Without a tag a task is stored as ``name:v0``, ``v1``... (a
series that starts as a prompt task is version 0, so the loop's first fine-tuned version is v1), with
``name:latest`` pointing at the newest, like a fine-tuning series, so a fine-tuned model can
later take over ``name:latest`` (the feedback loop's promotion) and the prompt version stays readable.
"""

from __future__ import annotations

from typing import Any

from llmos.errors import Conflict, InvalidInput
from llmos.prompt_tasks.spec import PromptTaskSpec, build_spec, method_for
from llmos.store.manifest import PROMPT_TASK_KIND as KIND
from llmos.store.manifest import Lineage, LineageBase, ManifestData, ModelInfo, is_prompt_task
from llmos.store.names import parse_ref
from llmos.store.registry import Registry

SERVED_BY = {"classify": "classify", "extract": "tag"}  # spec kind -> route task


def spec_of(info: ModelInfo) -> PromptTaskSpec:
    return PromptTaskSpec.model_validate(info.manifest.lineage.prompt_task)


def create_prompt_task(registry: Registry, name: str, base: str, *, kind: str, labels: list[str],
                       template: str | None = None, descriptions: dict[str, str] | None = None,
                       examples: list[dict[str, Any]] | None = None, options: dict[str, Any] | None = None,
                       tenant: str | None = None, replace: bool = False, admin: bool = False) -> ModelInfo:
    """Check everything (404 unknown base; 400 a base that cannot, a bad spec), then store the task.

    With a ``tenant`` the base must be visible to it and the task is private to it (as a fine-tuned
    model is), unless ``name`` is public and the caller an ``admin`` (403 for anyone else); without a
    tenant (the local CLI) the task is public.
    """
    base_info = registry.get(base, tenant=tenant)
    if is_prompt_task(base_info):
        raise InvalidInput(f"{base_info.ref} is itself a prompt task; name the model it runs on", param="base")
    method = method_for(kind, base_info.manifest.tasks)
    spec = build_spec(kind, method, labels, template=template, descriptions=descriptions, examples=examples,
                      **(options or {}))
    manifest = _manifest(base_info, spec)
    ref = parse_ref(name)
    owner = registry.check_write(ref.name, tenant, admin=admin)
    if owner is None and base_info.tenant is not None:
        raise InvalidInput(f"{ref.name} is public; a public prompt task needs a public base, not the private "
                           f"{base_info.ref}", param="base")
    if ":" in name:
        return registry.add(str(ref), manifest, replace=replace, tenant=owner)
    version = _next_version(registry, ref.name, owner, replace)
    info = registry.add(f"{ref.name}:{version}", manifest, tenant=owner)
    registry.tag_key(info.key, f"{ref.name}:latest", replace=True)
    return info


def _manifest(base: ModelInfo, spec: PromptTaskSpec) -> ManifestData:
    m = base.manifest
    return ManifestData(
        kind=KIND, files=[], architecture=KIND, model_type=m.model_type, tasks=[SERVED_BY[spec.kind]],
        parameters=m.parameters, dtype=m.dtype, size_bytes=0, context_length=m.context_length,
        chat_template=m.chat_template, labels=list(spec.labels), license=m.license,
        source=f"prompt:{base.ref}", parent=f"{base.ref}@{base.digest}",
        # "base" has the shape trained versions record; the method lives in the spec (it is no training method)
        lineage=Lineage(base=LineageBase(ref=base.ref, digest=base.digest), prompt_task=spec.model_dump(mode="json")),
    )


def _next_version(registry: Registry, name: str, owner: str | None, replace: bool) -> str:
    """``vN`` after the name's highest in ``owner``'s namespace; a ``latest`` outside such a series is
    only re-pointed on request."""
    tags = {i.tag: i for i in registry.versions(name, owner)}
    versions = [int(t[1:]) for t in tags if t[:1] == "v" and t[1:].isdigit()]
    latest = tags.get("latest")
    in_series = latest is not None and any(tags[f"v{n}"].digest == latest.digest for n in versions)
    if latest is not None and not in_series and not replace:
        raise Conflict(f"model {name} already exists and is not a versioned series (name:v0, name:v1...); "
                       "choose another name, give a tag, or pass replace to re-point name:latest")
    return f"v{max(versions, default=-1) + 1}"
