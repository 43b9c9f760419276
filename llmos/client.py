"""A Python client for the llmos daemon (the CLI's way in when a daemon is needed).

    from llmos.client import Client
    c = Client()                                   # http://127.0.0.1:7440 by default
    print(c.chat("smollm2-135m-instruct", "What is the capital of France?"))
    for piece in c.chat("smollm2-135m-instruct", "Tell me a story", stream=True):
        print(piece, end="")

Errors come back as llmos errors (ModelNotFound, QueueFull, ...) with the daemon's message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from llmos import errors

_BY_STATUS: dict[int, type[errors.LlmosError]] = {
    400: errors.InvalidInput, 404: errors.NotFound, 409: errors.Conflict, 413: errors.PayloadTooLarge,
    422: errors.InvalidInput, 503: errors.Unavailable, 507: errors.WontFit,
}

Messages = str | list[dict[str, str]]


class Client:
    def __init__(self, base_url: str | None = None, *, api_key: str | None = None, timeout: float = 600.0) -> None:
        if base_url is None:
            from llmos.config import load_settings

            s = load_settings()
            base_url = f"http://{s.host}:{s.port}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    # -- plumbing ----------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise errors.Unavailable(f"the llmos daemon is not reachable at {self.base_url} ({exc}); "
                                     "start it with `llmos serve`") from None
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
                            raise errors.EngineFailed(event["error"]["message"])
                        yield event
        except httpx.TransportError as exc:
            raise errors.Unavailable(f"lost the connection to {self.base_url} ({exc})") from None

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

    def complete(self, model: str, prompt: str, **params: Any) -> str:
        body = {"model": model, "prompt": prompt, **params}
        return self._request("POST", "/v1/completions", json=body)["choices"][0]["text"]

    def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        data = self._request("POST", "/v1/embeddings", json={"model": model, "input": texts})["data"]
        return [d["embedding"] for d in data]

    def classify(self, model: str, texts: list[str]) -> list[dict[str, Any]]:
        return self._request("POST", "/v1/classify", json={"model": model, "input": texts})["data"]

    def tag(self, model: str, texts: list[str]) -> list[list[dict[str, Any]]]:
        data = self._request("POST", "/v1/tag", json={"model": model, "input": texts})["data"]
        return [d["entities"] for d in data]

    # -- admin -------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def models(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/models")["data"]

    def ps(self) -> dict[str, Any]:
        return self._request("GET", "/admin/ps")

    def load(self, model: str, keep_alive: float | None = None) -> dict[str, Any]:
        return self._request("POST", "/admin/load", json={"model": model, "keep_alive": keep_alive})

    def unload(self, model: str) -> dict[str, Any]:
        return self._request("POST", "/admin/unload", json={"model": model})

    # -- jobs --------------------------------------------------------------------------------------
    def jobs(self, state: str | None = None) -> list[dict[str, Any]]:
        params = {"state": state} if state else None
        return self._request("GET", "/v1/jobs", params=params)["data"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}")

    def job_events(self, job_id: str, since: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Events with an id above ``since``, oldest first (pass the last id seen to follow)."""
        return self._request("GET", f"/v1/jobs/{job_id}/events", params={"since": since, "limit": limit})["data"]

    def job_logs(self, job_id: str, max_bytes: int = 1 << 20) -> str:
        return self._request("GET", f"/v1/jobs/{job_id}/logs", params={"max_bytes": max_bytes})["log"]

    def pause_job(self, job_id: str, *, free_memory: bool = False) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/pause", json={"free_memory": free_memory})

    def resume_job(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/resume")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel")


def _raise_for(r: httpx.Response) -> None:
    if r.status_code < 400:
        return
    try:
        err = r.json().get("error", {})
        message = err.get("message", r.text)
    except ValueError:
        message = r.text or r.reason_phrase
    cls = _BY_STATUS.get(r.status_code, errors.LlmosError)
    exc = cls(message)
    if isinstance(exc, errors.Unavailable):
        exc.retry_after = float(r.headers.get("retry-after", 1))
    raise exc
