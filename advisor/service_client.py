"""The few calls `advisor check` makes to a lora-advisor service: check a plan, upload a dataset, submit a
study and follow it. Plain httpx; every failure is a `ServiceError` saying which URL answered what."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from advisor.errors import AdvisorError

TIMEOUT_SECONDS = 30.0
UPLOAD_TIMEOUT_SECONDS = 300.0  # a dataset of a few hundred MB over a slow link
FINISHED_STATES = ("succeeded", "failed", "canceled")


class ServiceError(AdvisorError):
    """The service could not be reached or refused a request."""


class Unreachable(ServiceError):
    """No answer at all (connection refused, DNS, timeout): the check treats it as "nothing known"."""


@dataclass
class ServiceClient:
    server: str
    token: str | None = None

    def url(self, path: str) -> str:
        return self.server.rstrip("/") + path

    def check(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/check: the verdict (`decision`) and the stored answer it came from."""
        answer = self._request("POST", "/v1/check", json=body)
        if answer.get("decision") is None:
            raise ServiceError(f"{self.url('/v1/check')} is too old to answer `advisor check`; upgrade it")
        return answer

    def upload_dataset(self, data: bytes, fmt: str) -> dict[str, Any]:
        """POST /v1/datasets: the stored copy's path (content-addressed) and fingerprint."""
        return self._request(
            "POST", f"/v1/datasets?format={fmt}", content=data, timeout=UPLOAD_TIMEOUT_SECONDS
        )

    def submit_study(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        """POST /v1/studies with an Idempotency-Key: a second submission of the same study replays the
        first (`created` false) instead of starting another."""
        return self._request("POST", "/v1/studies", json=body, headers={"Idempotency-Key": idempotency_key})

    def study(self, study_id: int) -> dict[str, Any]:
        return self._request("GET", f"/v1/studies/{study_id}")

    def wait_for_study(
        self,
        study_id: int,
        seconds: float,
        *,
        poll_seconds: float = 2.0,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """The study once it has finished, or as it stands when `seconds` have passed."""
        deadline = time.monotonic() + seconds
        while True:
            study = self.study(study_id)
            if on_progress is not None:
                on_progress(study)
            left = deadline - time.monotonic()
            if study["state"] in FINISHED_STATES or left <= 0:
                return study
            time.sleep(min(poll_seconds, left))

    def _request(self, method: str, path: str, *, timeout: float = TIMEOUT_SECONDS, **kwargs: Any) -> Any:
        headers = {**kwargs.pop("headers", {})}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.url(path)
        try:
            response = httpx.request(method, url, headers=headers, timeout=timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach {url}: {exc}") from None
        if response.status_code >= 400:
            raise ServiceError(f"{url} answered {response.status_code}: {_problem_detail(response)}")
        return response.json()


def _problem_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    detail = str(body.get("detail")) if isinstance(body, dict) else str(body)[:200]
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        detail += " (" + "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors[:3]) + ")"
    return detail
