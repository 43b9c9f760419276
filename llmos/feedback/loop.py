"""The self-improvement loop: feedback -> dataset -> retrain -> gate -> canary -> promote or roll back.

Each policy is a state machine: ``idle`` (collecting feedback) -> ``training`` (a ``train`` job) ->
``gating`` (an ``evaluate`` job scores candidate and serving version) -> ``canary`` -> ``idle``.
The retrain and the gate are jobs like any other: admitted under the memory budget, yielding to
interactive traffic, visible in ``llmos jobs``; the loop only queues them and reads their results.

``Loop.tick()`` advances every policy by at most one step and returns what it decided; the daemon
calls it on a background thread every ``LLMOS_LOOP_INTERVAL`` seconds (tests call it directly). Each
decision is an audit event (actor ``loop``) with its numbers, and ``history`` reads them back.

The serving version is ``NAME:latest``. A retrain publishes ``NAME:vN`` without moving ``latest``;
only a passed gate and a won canary re-point it. A rollback (``rollback``) re-points ``latest`` to
the version that served before, or ends a running canary; a retrain that finishes after the serving
version changed under it is discarded, never promoted blindly.
"""

from __future__ import annotations

import logging
import secrets
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from llmos.auth.audit import audit, list_audit
from llmos.data.registry import Datasets
from llmos.errors import Conflict, LlmosError, NotFound
from llmos.feedback.items import FeedbackStore, corrected_items, erase_old_text
from llmos.jobs import JobRunner, JobState
from llmos.feedback.canary import CanaryRouter, Verdict, arm_stats, judge
from llmos.feedback.canary_signals import record_canary_outcome
from llmos.feedback.rated import confirmed, preferred_over_rejected, rated, with_rejected
from llmos.feedback.rounds import RoundWaits, build_round, trained_pairs
from llmos.feedback.evaluate_job import KIND as EVALUATE, EvaluateResult, EvaluateSpec, GateRule, gate_spec
from llmos.feedback.policy import Policies, PolicyState
from llmos.feedback.zero_shot import build_first_round, first_base
from llmos.runtime import Runtime
from llmos.store.manifest import ModelInfo, is_prompt_task
from llmos.store.names import parse_ref
from llmos.train.config import Hyperparameters, TrainSpec
from llmos.train.plan import TrainEnv, TrainPlan, plan_training

log = logging.getLogger("llmos.feedback")
ACTOR = "loop"
# settings the serving version's lineage records as resolved for its own data: a round's dataset has
# another size, so they are fitted to it again (``train.config.fit_to_data``) unless the policy sets them
FITTED_TO_DATA = ("epochs", "max_steps", "eval_steps", "early_stopping_patience")


def round_hyperparameters(serving: dict[str, Any], policy: dict[str, Any]) -> dict[str, Any]:
    """A round's hyperparameters: the serving version's, less those fitted to its own data, then the
    policy's overrides."""
    kept = {k: v for k, v in serving.items() if k in Hyperparameters.model_fields and k not in FITTED_TO_DATA}
    return {**kept, **policy}


class Loop:
    def __init__(self, runtime: Runtime, jobs: JobRunner) -> None:
        self.runtime = runtime
        self.db = runtime.db
        self.registry = runtime.store.registry
        self.jobs = jobs
        self.policies = Policies(runtime.db)
        self.feedback = FeedbackStore(runtime.db, self.registry)
        self.router = CanaryRouter(runtime.db)
        self._tick_lock = threading.Lock()
        self._actions: list[str] = []  # what the running tick decided
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def learns(self, name: str, tenant: str) -> bool:
        return self.router.learns(name, tenant)

    # -- the daemon's thread -----------------------------------------------------------------------
    def start(self, interval: float) -> None:
        if interval <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(interval,), name="feedback-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad round; the log says why
                log.exception("feedback loop tick failed")

    # -- one step per policy -------------------------------------------------------------------------
    def tick(self) -> list[str]:
        """Advance each enabled policy by one step; returns the audit actions taken."""
        with self._tick_lock:
            self._actions = []
            for p in self.policies.list():
                if not p.settings.enabled:
                    continue
                step = {"idle": self._maybe_retrain, "training": self._after_training,
                        "gating": self._after_gate, "canary": self._judge_canary}[p.state]
                try:
                    step(p)
                except Exception as exc:  # noqa: BLE001 - one broken policy must not stall the others
                    log.exception("feedback loop step for %s failed", p.name)
                    self._decide(p, "loop.error", state=p.state, reason=f"{type(exc).__name__}: {exc}")
            done = list(self._actions)
            erase_old_text(self.db, self.runtime.settings.prompt_retention_days)
        self.router.refresh()
        return done

    def _decide(self, p: PolicyState, action: str, actor: str = ACTOR, **detail: Any) -> str:
        audit(self.db, actor, p.tenant, action, p.name, **detail)
        if actor == ACTOR:
            self._actions.append(action)
        return action

    def _serving(self, name: str, tenant: str) -> ModelInfo | None:
        return self.registry.find(f"{name}:latest", tenant=tenant)

    def _maybe_retrain(self, p: PolicyState) -> str | None:
        new = [f for f in self.feedback.list(p.tenant, model=p.name, after=p.feedback_cutoff)
               if f.correction is not None]
        items = sum(corrected_items(f.correction, f.route) for f in new)  # a batch's 9 corrections count 9
        if items < p.settings.min_feedback:
            return None
        upto = max(f.id for f in new)
        if upto == p.round_cutoff and p.round_cutoff > p.feedback_cutoff:
            return None  # a round on exactly this feedback failed: it waits for more, not retries each tick
        serving = self._serving(p.name, p.tenant)
        try:
            plan, root = self._retrain_plan(p, serving, upto)
            spec = plan.spec
            job_id = self.jobs.submit("train", plan.job_spec(), tenant=p.tenant)
        except RoundWaits as why:  # the feedback stays unused: the round starts once enough has come
            return self._wait(p, str(why))
        except LlmosError as exc:  # the feedback is not used up: the next round (on more of it) includes it
            self.policies.update(p.name, p.tenant, round_cutoff=upto)
            return self._decide(p, "loop.retrain_failed", reason=exc.message, feedback=len(new),
                                corrected_items=items, serving=serving.ref if serving else None)
        self.policies.update(p.name, p.tenant, expect="idle", state="training", job_id=job_id, candidate=spec.name,
                             baseline=serving.digest if serving else None, root_dataset=root, round_cutoff=upto)
        return self._decide(p, "loop.retrain", job=job_id, candidate=spec.name, dataset=spec.dataset,
                            new_feedback=len(new), corrected_items=items, serving=_version(self.registry, serving),
                            **({"zero_shot": True} if serving is not None and is_prompt_task(serving) else {}))

    def _retrain_plan(self, p: PolicyState, serving: ModelInfo | None, upto: int) -> tuple[TrainPlan, str | None]:
        """Build the round's dataset and plan the retrain: same base and method as the serving version."""
        if serving is None:
            raise NotFound(f"{p.name}:latest does not exist")
        if is_prompt_task(serving):
            return self._first_round_plan(p, serving, upto), None
        lin = serving.manifest.lineage
        if lin.dataset is None or lin.base is None:
            raise Conflict(f"{serving.ref} was not trained by llmos: no dataset in its lineage to retrain from")
        root = p.root_dataset or f"{lin.dataset.name}@{lin.dataset.version}"
        datasets = Datasets.of(self.runtime, p.tenant)
        answers = rated(self.db, p.name, p.tenant, upto=upto)
        examples = with_rejected(self.feedback.examples(p.name, p.tenant, upto=upto), answers)
        examples += preferred_over_rejected(answers)
        method = p.settings.method or lin.method
        if method == "dpo":
            found = trained_pairs(examples, p.settings.holdout, p.settings.seed)
            if found < p.settings.min_pairs:
                raise RoundWaits(f"method dpo waits for {p.settings.min_pairs} trained preference pairs (a thumbs-down "
                                 f"answer with its correction, or beside a thumbs-up answer to the same prompt); "
                                 f"{found} so far")
        built = build_round(datasets, p.name, root, examples, p.settings.holdout, p.settings.seed,
                            confirmed(answers), p.settings.thumbs_up_train)
        hp = round_hyperparameters(lin.hyperparameters or {}, p.settings.hyperparameters)
        owner = self.registry.owner(p.name, p.tenant)  # a public name's loop was set by an admin
        spec = TrainSpec.parse({"base": lin.base.ref, "dataset": built.dataset.ref, "task": lin.task,
                                "method": method, "hyperparameters": hp,
                                "name": self.registry.next_version(p.name, owner), "tenant": p.tenant,
                                "publish": owner is None, "start_from": _continued(self.registry, serving, method)})
        return plan_training(TrainEnv(self.registry, datasets), spec), root  # every problem surfaces now

    def _first_round_plan(self, p: PolicyState, task: ModelInfo, upto: int) -> TrainPlan:
        """The zero-shot start: the first fine-tuned version of a prompt task, from its feedback alone
        (``llmos.feedback.zero_shot``); its dataset becomes the root later rounds retrain from."""
        datasets = Datasets.of(self.runtime, p.tenant)
        dataset, _, _ = build_first_round(datasets, p.name, task, self.feedback.examples(p.name, p.tenant, upto=upto),
                                          self.feedback.confirmed(p.name, p.tenant, upto=upto),
                                          p.settings.holdout, p.settings.seed)
        owner = self.registry.owner(p.name, p.tenant)
        spec = TrainSpec.parse({"base": first_base(self.registry, task, p.tenant, p.settings.first_base),
                                "dataset": dataset.ref, "task": dataset.task.value,
                                "hyperparameters": p.settings.hyperparameters,
                                "name": self.registry.next_version(p.name, owner), "tenant": p.tenant,
                                "publish": owner is None})
        return plan_training(TrainEnv(self.registry, datasets), spec)

    def _wait(self, p: PolicyState, reason: str) -> str | None:
        """Record why a round waits, once per reason (the loop's status shows the latest)."""
        last = next((e for e in list_audit(self.db, tenant=p.tenant, limit=200)
                     if e.target == p.name and e.action.startswith("loop.")), None)
        if last is not None and last.action == "loop.waiting" and last.detail.get("reason") == reason:
            return None
        return self._decide(p, "loop.waiting", reason=reason)

    def _after_training(self, p: PolicyState) -> str | None:
        job = self.jobs.get(p.job_id) if p.job_id else None
        if job is not None and not job.state.final:
            return None
        serving = self._serving(p.name, p.tenant)
        idle = {"state": "idle", "job_id": None, "feedback_cutoff": p.round_cutoff}
        if job is None or job.state != JobState.SUCCEEDED:  # a failed round uses up no feedback
            self.policies.update(p.name, p.tenant, expect="training", candidate=None, state="idle", job_id=None)
            return self._decide(p, "loop.retrain_failed", job=p.job_id,
                                reason=(job.error if job else "job missing") or (job.state.api if job else ""),
                                serving=_version(self.registry, serving))
        candidate = job.result_model or p.candidate
        if serving is None or serving.digest != p.baseline:
            self.policies.update(p.name, p.tenant, expect="training", **idle)
            return self._decide(p, "loop.discarded", candidate=candidate,
                                reason="the serving version changed while the candidate trained (rollback or "
                                       "re-tag); the candidate is not promoted")
        dataset = str(job.spec.get("dataset", ""))
        rule = GateRule(margin=p.settings.margin, val_tolerance=p.settings.val_tolerance,
                        confidence=p.settings.confidence, seed=p.settings.seed, judge=p.settings.judge)
        spec = gate_spec(self.registry, candidate, _version(self.registry, serving) or serving.ref, dataset, rule,
                         p.tenant)
        gate_job = self.jobs.submit(EVALUATE, spec.model_dump(mode="json"), tenant=p.tenant)
        if not self.policies.update(p.name, p.tenant, expect="training", state="gating", job_id=gate_job,
                                    candidate=candidate):
            self.jobs.cancel(gate_job)  # a rollback or another daemon moved the round on first
            return None
        return self._decide(p, "loop.gate_started", job=gate_job, candidate=candidate, serving=spec.models[1],
                            dataset=dataset)

    def _after_gate(self, p: PolicyState) -> str | None:
        job = self.jobs.get(p.job_id) if p.job_id else None
        if job is not None and not job.state.final:
            return None
        serving = self._serving(p.name, p.tenant)
        idle = {"state": "idle", "job_id": None, "feedback_cutoff": p.round_cutoff}
        if job is None or job.state != JobState.SUCCEEDED:  # no verdict: the feedback is not used up
            self.policies.update(p.name, p.tenant, expect="gating", candidate=None, state="idle", job_id=None)
            return self._decide(p, "loop.gate_failed", job=p.job_id, candidate=p.candidate,
                                reason=(job.error if job else "job missing") or (job.state.api if job else ""),
                                serving=_version(self.registry, serving))
        spec, result = EvaluateSpec.model_validate(job.spec), EvaluateResult.model_validate(job.result or {})
        candidate, gated_against = spec.models[0], spec.models[1]
        if serving is None or serving.digest != p.baseline:
            self.policies.update(p.name, p.tenant, expect="gating", **idle)
            return self._decide(p, "loop.discarded", candidate=candidate,
                                reason="the serving version changed while the candidate was gated (rollback or "
                                       "re-tag); the candidate is not promoted")
        gate = result.gate
        if gate is None or not gate.passed:
            self.policies.update(p.name, p.tenant, expect="gating", **idle)
            detail = gate.to_dict() if gate else {"passed": False, "reason": "the evaluate job gave no verdict"}
            return self._decide(p, "loop.gate_rejected", candidate=candidate, serving=gated_against,
                                dataset=spec.dataset, job=job.id, **detail)
        now = datetime.now(timezone.utc)
        canary = {"candidate": candidate, "serving": gated_against, "share": p.settings.canary_share,
                  "salt": secrets.token_hex(8), "min_ratings": p.settings.canary_min,
                  "alpha": p.settings.canary_alpha, "started_at": now.isoformat(),
                  "deadline": (now + timedelta(hours=p.settings.canary_max_hours)).isoformat()}
        if not self.policies.update(p.name, p.tenant, expect="gating", state="canary", canary=canary, job_id=None):
            return None  # a rollback ended the round first
        self._decide(p, "loop.gate_passed", candidate=candidate, serving=gated_against, dataset=spec.dataset,
                     job=job.id, **gate.to_dict())
        return self._decide(p, "loop.canary_started", **{k: v for k, v in canary.items() if k != "salt"})

    def _judge_canary(self, p: PolicyState) -> str | None:
        c = p.canary or {}
        since = datetime.fromisoformat(c["started_at"])
        cand = arm_stats(self.db, c["candidate"], p.tenant, since)
        enough = cand.rated >= int(c.get("min_ratings", c.get("min_requests", 0)))
        expired = "deadline" in c and datetime.now(timezone.utc) >= datetime.fromisoformat(c["deadline"])
        if not enough and not expired:
            return None
        serv = arm_stats(self.db, (c["serving"], f"{p.name}:latest"), p.tenant, since)  # logged as its version
        if enough:
            verdict = judge(cand, serv, alpha=float(c.get("alpha", 0.05)))
        else:
            verdict = Verdict(True, f"the canary's time ran out with {cand.rated} of {c.get('min_ratings')} "
                                    "ratings: the gate's verdict stands")
        numbers = {"candidate_arm": {**vars(cand)}, "serving_arm": {**vars(serv)}, "reason": verdict.reason,
                   "p_value": verdict.p_value, **c}
        numbers.pop("salt", None)
        if not self.policies.update(p.name, p.tenant, expect="canary", state="idle", canary=None, candidate=None,
                                    feedback_cutoff=p.round_cutoff):
            return None  # a rollback ended it first
        record_canary_outcome(p.name, c["candidate"].partition(":")[2], "promoted" if verdict.promote else "rolled_back")
        if verdict.promote:
            self.registry.tag(c["candidate"], f"{p.name}:latest", replace=True, tenant=p.tenant)
            return self._decide(p, "loop.promoted", previous=c["serving"], promoted=c["candidate"], **numbers)
        return self._decide(p, "loop.rolled_back", kept=c["serving"], **numbers)

    # -- user actions ------------------------------------------------------------------------------
    def rollback(self, name: str, tenant: str, actor: str, to: str | None = None, *,
                 admin: bool = False) -> dict[str, Any]:
        """End a running canary (the serving version stays), or re-point ``NAME:latest`` to the version
        that served before the current one (or to ``to``). Works while a retrain job runs: its result is
        then discarded when it finishes, because the serving version changed. Everything is read in
        ``tenant``'s namespace; a public name is re-pointed by an admin alone."""
        name = parse_ref(name).name
        p = self.policies.find(name, tenant)
        if p is not None and p.state == "canary" and to is None and p.canary:
            if self.policies.update(name, tenant, expect="canary", state="idle", canary=None, candidate=None,
                                    feedback_cutoff=p.round_cutoff):
                self.router.refresh()
                record_canary_outcome(name, p.canary["candidate"].partition(":")[2], "rolled_back")
                self._decide(p, "loop.rolled_back", actor=actor, kept=p.canary["serving"],
                             candidate=p.canary["candidate"], reason="rolled back by a user during the canary")
                return {"name": name, "serving": p.canary["serving"], "ended_canary": p.canary["candidate"]}
        current = self.registry.get(f"{name}:latest", tenant=tenant)
        owner = self.registry.check_write(name, tenant, admin=admin)
        target = to or self._previous(name, tenant, current)
        if target is None:
            raise Conflict(f"no earlier serving version of {name} is recorded; name one with --to {name}:vN")
        info = self.registry.get(target if ":" in target else f"{name}:{target}", tenant=tenant)
        self.registry.add(f"{name}:latest", info.manifest, replace=True, tenant=owner)
        audit(self.db, actor, tenant, "loop.rollback", name, previous=_version(self.registry, current),
              serving=info.ref, training_job=p.job_id if p and p.state == "training" else None,
              **({"gate_job": p.job_id} if p and p.state == "gating" else {}))
        return {"name": name, "serving": info.ref, "previous": _version(self.registry, current)}

    def _previous(self, name: str, tenant: str, current: ModelInfo) -> str | None:
        """The version ``latest`` pointed at before the promotion that made the current one serve."""
        now = _version(self.registry, current)
        for e in list_audit(self.db, tenant=tenant, limit=10_000):
            if e.target == name and e.action == "loop.promoted" and e.detail.get("promoted") == now:
                return str(e.detail.get("previous"))
        return None

    def history(self, name: str, tenant: str) -> dict[str, Any]:
        """Versions (with their metrics and which one serves), the policy, and every loop decision."""
        name = parse_ref(name).name
        serving = self._serving(name, tenant)
        versions = [{"ref": i.ref, "digest": i.digest, "created_at": i.created_at.isoformat(),
                     "serving": serving is not None and i.digest == serving.digest,
                     "kind": "prompt task" if is_prompt_task(i) else "fine-tuned",
                     "dataset": i.manifest.lineage.dataset.name if i.manifest.lineage.dataset else None,
                     "metrics": i.manifest.lineage.metrics or {}, "measured": measured_on(i, name)}
                    for i in self.registry.list(tenant=tenant) if i.name == name and i.tag != "latest"
                    and (serving is None or i.tenant == serving.tenant)]
        if not versions and serving is None:
            raise NotFound(f"model {name!r} not found")
        events = [{"at": e.at.isoformat(), "action": e.action, "actor": e.actor, **e.detail}
                  for e in reversed(list_audit(self.db, tenant=tenant, limit=10_000))
                  if e.target == name and e.action.startswith("loop.")]
        p = self.policies.find(name, tenant)
        return {"name": name, "serving": _version(self.registry, serving) if serving else None, "versions": versions,
                "policy": p.to_api() if p else None, "events": events}


def measured_on(info: ModelInfo, name: str) -> str | None:
    """What a version's metrics measured: a fine-tune's report split, which for a loop round's dataset
    (``NAME-feedback``) is the held-out feedback, a set that changes every round."""
    lin = info.manifest.lineage
    if is_prompt_task(info):
        return "zero-shot prompt task: no training metrics (the gate scores it on held-out feedback)"
    if not lin.metrics or lin.dataset is None:
        return None
    rows = f"{lin.eval_rows} rows" if lin.eval_rows is not None else "rows not recorded"
    ref = f"{lin.dataset.name}@{lin.dataset.version}"
    if lin.dataset.name == f"{name}-feedback" and lin.eval_split == "test":
        return f"held-out feedback of {ref} ({rows}; a round's set, it grows each round)"
    split = lin.eval_split or "validation"
    return f"{'validation' if split == 'validation' else split + ' split'} of {ref} ({rows})"


def _continued(registry: Any, serving: ModelInfo, method: str) -> str | None:
    """A preference round refines the serving LoRA adapter (and takes it as DPO's reference) rather than
    a fresh adapter over the base: the pairs teach which answer is better, not the task from scratch.
    Other methods retrain from the base on the whole round dataset."""
    lin = serving.manifest.lineage
    if method != "dpo" or serving.manifest.kind != "adapter" or (lin.peft_type or "") != "LORA":
        return None
    return _version(registry, serving)


def _version(registry: Any, info: ModelInfo | None) -> str | None:
    """The ``name:tag`` (not ``latest``) holding the same manifest as ``info``: what actually serves."""
    if info is None:
        return None
    return registry.version_of(info).ref
