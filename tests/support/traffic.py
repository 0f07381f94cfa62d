"""Inference traffic through the dev cluster's router in a background thread (about 20
requests a second), recording each answer's status and the version that gave it (the
``X-Mmop-Version`` header); 0 for a transport error."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from mmop.runtime import contract

TASK = contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION


def infer_body(task: str = TASK) -> dict[str, Any]:
    """An OIP infer body that exercises ``task`` (the operator's smoke-test request)."""
    return contract.smoke_test_request(task) | {"id": "traffic"}


@dataclass
class Traffic:
    """Requests to model ``model`` (in ``namespace``) through the router at ``router_url``."""

    router_url: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    namespace: str = "default"
    body: dict[str, Any] = field(default_factory=infer_body)
    answers: list[tuple[int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        headers = {"Host": f"{self.model}.{self.namespace}", **self.headers}
        with httpx.Client(base_url=self.router_url, timeout=30) as http:
            while not self._stop.is_set():
                try:
                    r = http.post(contract.infer_path(self.model), json=self.body, headers=headers)
                    self.answers.append((r.status_code, r.headers.get("X-Mmop-Version", "")))
                except httpx.HTTPError:
                    self.answers.append((0, ""))
                time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def mark(self) -> int:
        """A point in the record: ``since(mark)`` counts the answers after it."""
        return len(self.answers)

    def since(self, mark: int) -> Counter[tuple[int, str]]:
        return Counter(self.answers[mark:])

    @property
    def responses(self) -> int:
        """Requests answered with any HTTP status."""
        return sum(1 for code, _ in list(self.answers) if code != 0)

    @property
    def failures(self) -> int:
        """Requests not answered 200 (transport errors included)."""
        return sum(1 for code, _ in list(self.answers) if code != 200)
