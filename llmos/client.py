"""A Python client for the llmos daemon (the CLI's way in when a daemon is needed).

    from llmos.client import Client
    c = Client()                                   # http://127.0.0.1:7440 by default
    print(c.chat("smollm2-135m-instruct", "What is the capital of France?"))
    for piece in c.chat("smollm2-135m-instruct", "Tell me a story", stream=True):
        print(piece, end="")

Errors come back as llmos errors (ModelNotFound, QueueFull, ...) with the daemon's message.
The API key is ``api_key=`` or, when not given, the LLMOS_API_KEY setting.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from llmos import errors

_BY_STATUS: dict[int, type[errors.LlmosError]] = {
    400: errors.InvalidInput, 401: errors.Unauthorized, 403: errors.Forbidden, 404: errors.NotFound,
    409: errors.Conflict, 413: errors.PayloadTooLarge, 422: errors.InvalidInput, 429: errors.RateLimited,
    503: errors.Unavailable, 507: errors.WontFit,
}

Messages = str | list[dict[str, str]]


class DaemonNotRunning(errors.Unavailable):
    """Nothing accepts connections at the daemon's address: a caller may do the work in-process instead.
    Any other failure (a refused key, a timeout, an error answer) is a daemon that runs."""


class Client:
    def __init__(self, base_url: str | None = None, *, api_key: str | None = None, timeout: float = 600.0) -> None:
        if base_url is None or api_key is None:  # unset: from settings (LLMOS_HOST / PORT / API_KEY)
            from llmos.config import load_settings

            s = load_settings()
            base_url = base_url or f"http://{s.host}:{s.port}"
            api_key = api_key if api_key is not None else s.api_key.get_secret_value()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    # -- plumbing ----------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise self._not_running(exc) from None
        except httpx.TransportError as exc:
            raise errors.Unavailable(f"the llmos daemon at {self.base_url} did not answer ({exc})") from None
        _raise_for(r)
        return r.json()

    def _stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        try:
            with self._http.stream("POST", path, json=body) as r:
                if r.status_code != 200:
                    r.read()
                    _raise_for(r)
                for line in r.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        event = json.loads(line[6:])
                        if "error" in event:
                            if event["error"].get("type") == "quota_exceeded":
                                raise errors.QuotaExceeded(event["error"]["message"])
                            raise errors.EngineFailed(event["error"]["message"])
                        yield event
        except httpx.ConnectError as exc:
            raise self._not_running(exc) from None
        except httpx.TransportError as exc:
            raise errors.Unavailable(f"lost the connection to {self.base_url} ({exc})") from None

    def _not_running(self, exc: Exception) -> DaemonNotRunning:
        return DaemonNotRunning(f"the llmos daemon is not reachable at {self.base_url} ({exc}); "
                                "start it with `llmos serve`")

    def close(self) -> None:
        self._http.close()

    # -- inference ---------------------------------------------------------------------------------
    def chat(self, model: str, messages: Messages, *, stream: bool = False, **params: Any) -> Any:
        """The reply text; with ``stream=True`` an iterator of text pieces."""
        msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else messages
        body = {"model": model, "messages": msgs, **params}
        if stream:
            return (c["choices"][0]["delta"].get("content", "") for c in self._stream(
                "/v1/chat/completions", {**body, "stream": True}) if c.get("choices"))
        return self._request("POST", "/v1/chat/completions", json=body)["choices"][0]["message"]["content"]

    def complete(self, model: str, prompt: str, *, stream: bool = False, **params: Any) -> Any:
        """The completion text (no chat template); with ``stream=True`` an iterator of text pieces."""
        body = {"model": model, "prompt": prompt, **params}
        if stream:
            return (c["choices"][0].get("text", "") for c in self._stream(
                "/v1/completions", {**body, "stream": True}) if c.get("choices"))
        return self._request("POST", "/v1/completions", json=body)["choices"][0]["text"]

    def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        data = self._request("POST", "/v1/embeddings", json={"model": model, "input": texts})["data"]
        return [d["embedding"] for d in data]

    def classify(self, model: str, texts: list[str]) -> list[dict[str, Any]]:
        return self._request("POST", "/v1/classify", json={"model": model, "input": texts})["data"]

    def tag(self, model: str, texts: list[str]) -> list[list[dict[str, Any]]]:
        data = self._request("POST", "/v1/tag", json={"model": model, "input": texts})["data"]
        return [d["entities"] for d in data]

    def feedback(self, request_id: str, *, rating: int | None = None, correction: Any = None,
                 comment: str | None = None) -> dict[str, Any]:
        """Rate (+1 / -1) or correct the response with id ``request_id`` (idempotent)."""
        body = {"request_id": request_id, "rating": rating, "correction": correction, "comment": comment}
        return self._request("POST", "/v1/feedback", json=body)

    def model_history(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/loop/{name}/history")

    # -- knowledge bases ---------------------------------------------------------------------------
    def kb_create(self, name: str, *, embed_model: str = "minilm-l6", chunk_size: int | None = None,
                  overlap: int | None = None) -> dict[str, Any]:
        body = {"name": name, "embed_model": embed_model, "chunk_size": chunk_size, "overlap": overlap}
        return self._request("POST", "/v1/kb", json={k: v for k, v in body.items() if v is not None})

    def kb_list(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/kb")["data"]

    def kb_show(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/kb/{name}")

    def kb_delete(self, name: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/kb/{name}")

    def kb_add(self, name: str, files: list[tuple[str, bytes]]) -> dict[str, Any]:
        parts = [("files", (fname, data, "application/octet-stream")) for fname, data in files]
        return self._request("POST", f"/v1/kb/{name}/documents", files=parts)

    def kb_search(self, name: str, query: str, *, k: int = 5, mode: str = "hybrid") -> dict[str, Any]:
        return self._request("POST", f"/v1/kb/{name}/search", json={"query": query, "k": k, "mode": mode})

    # -- asking the OS ---------------------------------------------------------------------------------
    def ask(self, text: str, *, confirm: bool = False, local_files: list[str] | None = None) -> dict[str, Any]:
        """A plan for ``text`` (or a question, or a refusal); with ``confirm`` it runs at once.
        ``local_files``: the paths written in ``text`` that exist on this machine."""
        body: dict[str, Any] = {"text": text, "confirm": confirm}
        if local_files:
            body["local_files"] = local_files
        return self._request("POST", "/v1/ask", json=body)

    def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """One route call as it is (a plan step): its status and JSON body, an error answer included."""
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise self._not_running(exc) from None
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text

    def run_plan(self, plan_id: str) -> dict[str, Any]:
        """Run a plan this key asked for (once); the answer says what ran."""
        return self._request("POST", f"/v1/ask/{plan_id}/run")

    # -- admin -------------------------------------------------------------------------------------
    def health(self, timeout: float | None = None) -> dict[str, Any]:
        """The daemon's status; ``timeout`` (seconds) overrides the client's for this call."""
        return self._request("GET", "/health", **({} if timeout is None else {"timeout": timeout}))

    def models(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/models")["data"]

    def ps(self) -> dict[str, Any]:
        return self._request("GET", "/admin/ps")

    def load(self, model: str, keep_alive: float | None = None) -> dict[str, Any]:
        return self._request("POST", "/admin/load", json={"model": model, "keep_alive": keep_alive})

    def unload(self, model: str) -> dict[str, Any]:
        return self._request("POST", "/admin/unload", json={"model": model})

    def alerts(self, limit: int = 100) -> dict[str, Any]:
        """Alert rules with their states, and the newest firing / resolved notifications."""
        return self._request("GET", "/admin/alerts", params={"limit": limit})

    def metrics(self) -> str:
        """The Prometheus text exposition of ``/metrics``."""
        try:
            r = self._http.get("/metrics")
        except httpx.ConnectError as exc:
            raise self._not_running(exc) from None
        except httpx.TransportError as exc:
            raise errors.Unavailable(f"the llmos daemon at {self.base_url} did not answer ({exc})") from None
        _raise_for(r)
        return r.text

    # -- jobs --------------------------------------------------------------------------------------
    def jobs(self, state: str | None = None) -> list[dict[str, Any]]:
        params = {"state": state} if state else None
        return self._request("GET", "/v1/jobs", params=params)["data"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}")

    def job_events(self, job_id: str, since: int = 0, limit: int = 1000,
                   kinds: list[str] | None = None) -> list[dict[str, Any]]:
        """Events with an id above ``since``, oldest first (pass the last id seen to follow); only
        ``kinds`` (e.g. ["state", "control"]) when given."""
        params: dict[str, Any] = {"since": since, "limit": limit}
        if kinds:
            params["kind"] = kinds
        return self._request("GET", f"/v1/jobs/{job_id}/events", params=params)["data"]

    def job_logs(self, job_id: str, max_bytes: int = 1 << 20) -> str:
        return self._request("GET", f"/v1/jobs/{job_id}/logs", params={"max_bytes": max_bytes})["log"]

    def pause_job(self, job_id: str, *, free_memory: bool = False) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/pause", json={"free_memory": free_memory})

    def resume_job(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/resume")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel")

    # -- fine-tuning -------------------------------------------------------------------------------
    def fine_tune(self, model: str, dataset: str, *, task: str | None = None, method: str | None = None,
                  hyperparameters: dict[str, Any] | None = None, name: str | None = None) -> dict[str, Any]:
        """Queue a fine-tuning job (checked first: a bad request raises here); returns the job with its plan."""
        body = {"model": model, "dataset": dataset, "task": task, "method": method,
                "hyperparameters": hyperparameters or {}, "name": name}
        return self._request("POST", "/v1/training/jobs", json=body)

    def tune(self, model: str, dataset: str, *, space: dict[str, Any] | None = None, trials: int = 8,
             **options: Any) -> dict[str, Any]:
        """Queue a hyperparameter search (checked first); ``options``: task, method, hyperparameters,
        sampler, pruner, startup_trials, name. Returns the job with its plan."""
        body = {"model": model, "dataset": dataset, "space": space or {}, "trials": trials,
                **{k: v for k, v in options.items() if v is not None}}
        return self._request("POST", "/v1/tuning/jobs", json=body)


    def evaluate(self, model: str, dataset: str, *, split: str | None = None,
                 max_rows: int | None = None) -> dict[str, Any]:
        """Queue an ``evaluate`` job (checked first: a bad request raises here); returns the job."""
        body = {"model": model, "dataset": dataset, "split": split, "max_rows": max_rows}
        return self._request("POST", "/v1/evaluations", json=body)


def _raise_for(r: httpx.Response) -> None:
    if r.status_code < 400:
        return
    cls = _BY_STATUS.get(r.status_code, errors.LlmosError)
    exc = cls(_error_message(r))
    if isinstance(exc, errors.Unavailable):
        exc.retry_after = float(r.headers.get("retry-after", 1))
    raise exc


def _error_message(r: httpx.Response) -> str:
    """The daemon's own message; for an answer not in its shape, who answered what."""
    try:
        body = r.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"]
    if isinstance(body, dict) and isinstance(body.get("detail"), str):  # a route this daemon does not have
        return f"{r.request.url} answered {r.status_code}: {body['detail']}"
    return (f"{r.request.url} answered {r.status_code} {r.reason_phrase} without an llmos error: "
            "is something other than the llmos daemon listening there?")
