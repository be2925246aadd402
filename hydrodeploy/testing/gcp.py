"""A FAKE Compute Engine for tests: the real google-cloud-compute clients over a replaying HTTP
adapter.

:func:`fake_compute` builds the ``InstancesClient`` and ``ZoneOperationsClient`` of
google-cloud-compute with their REST transports and anonymous credentials, and mounts a
:class:`FakeComputeAdapter` on their HTTP session (a ``requests`` transport adapter) that answers
each request with a recorded response (status and JSON body) instead of going to the network.
Everything above the adapter is the real library: request building and serialisation, the
``requests`` session, status-code to exception mapping, response parsing. The adapter records
every request it gets, so tests can check request ids, labels and metadata.

A recording is a JSON list of exchanges::

    {"method": "POST", "path": "/compute/v1/projects/p/zones/z/instances",
     "params": {"requestId": "..."},          # optional: query parameters that must match
     "status": 200, "response": {...},        # the recorded answer
     "note": "why this exchange is here"}     # optional

A request is answered by the first unused exchange with its method and path (and parameters);
a request nothing matches fails the test with the request shown. Recordings may hold
placeholders (``${RUN_ID}``, ``${NAME_0}``, ...) that :func:`load_recording` fills in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import requests
import requests.adapters

from hydrodeploy.deploy.gcp import Compute


class FakeComputeAdapter(requests.adapters.BaseAdapter):
    """A requests transport adapter that replays recorded Compute Engine responses (see the
    module docstring); mounted on the client library's own HTTP session."""

    def __init__(self, exchanges: Iterable[Mapping[str, Any]]) -> None:
        super().__init__()
        self.pending: list[Mapping[str, Any]] = list(exchanges)
        self.requests: list[dict[str, Any]] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        url = urlparse(str(request.url))
        method = str(request.method)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        raw = request.body
        body = json.loads(raw) if isinstance(raw, str | bytes) and raw else None
        self.requests.append({"method": method, "path": url.path, "params": query, "body": body})
        for i, exchange in enumerate(self.pending):
            wanted = {str(k): str(v) for k, v in exchange.get("params", {}).items()}
            if exchange["method"] == method and exchange["path"] == url.path and all(query.get(k) == v for k, v in wanted.items()):
                del self.pending[i]
                return _response(request, int(exchange.get("status", 200)), exchange.get("response", {}))
        raise AssertionError(f"no recorded response for {method} {url.path} {query}")

    def close(self) -> None:
        pass

    def of(self, method: str, path_suffix: str = "") -> list[dict[str, Any]]:
        """The requests made with ``method`` whose path ends with ``path_suffix``."""
        return [r for r in self.requests if r["method"] == method and r["path"].endswith(path_suffix)]


def _response(request: requests.PreparedRequest, status: int, body: Any) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers["Content-Type"] = "application/json"
    response.url = str(request.url)
    response.request = request
    response.encoding = "utf-8"
    return response


def load_recording(path: str | Path, values: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The exchanges of a recording, with every ``${NAME}`` replaced by ``values[NAME]`` (the
    run id, instance names, request ids and addresses of the run under test)."""
    text = Path(path).read_text()
    for name, value in (values or {}).items():
        text = text.replace("${" + name + "}", value)
    exchanges: list[dict[str, Any]] = json.loads(text)
    return exchanges


def fake_compute(exchanges: Iterable[Mapping[str, Any]]) -> tuple[Compute, FakeComputeAdapter]:
    """Compute Engine clients answering from ``exchanges``, and the session that records what
    they were asked."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1
    from google.cloud.compute_v1.services.instances.transports.rest import InstancesRestTransport
    from google.cloud.compute_v1.services.zone_operations.transports.rest import (
        ZoneOperationsRestTransport,
    )

    adapter = FakeComputeAdapter(exchanges)
    instances = InstancesRestTransport(credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    operations = ZoneOperationsRestTransport(credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    for transport in (instances, operations):
        transport._session.mount("https://", adapter)  # the library's own session, our adapter
    return Compute(compute_v1.InstancesClient(transport=instances), compute_v1.ZoneOperationsClient(transport=operations)), adapter
