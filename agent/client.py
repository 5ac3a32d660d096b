"""Talking to the server: GraphQL over HTTP with ``urllib``, retries with backoff.

Every request is ``POST <server_url>/graphql`` with JSON ``{"query", "variables"}``
and ``Authorization: Bearer <token>``. Redirects are not followed (the token
must not travel to another address; point ``server_url`` at the final URL).

Failures raise :class:`RequestFailed`, whose message is safe to print: it
never contains the token. ``retriable`` tells whether trying again later may
help (network errors, timeouts, HTTP 408/429/5xx); a refused token (401), a
report too large (413) or a GraphQL error is not retried.
"""

from __future__ import annotations

import json
import random
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from agent import __version__

ENROLL_MUTATION = (
    "mutation($input: EnrollAgentInput!) { enrollAgent(input: $input) { agentToken host { id hostname } } }"
)
REPORT_MUTATION = (
    "mutation($input: ReportCertificatesInput!) { reportCertificates(input: $input) "
    "{ accepted newCertificates eventsRecorded stale rejected { index reason } } }"
)

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_RETRIABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_RETRIABLE_CODES = frozenset({"INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE", "TRY_AGAIN"})


class RequestFailed(Exception):
    def __init__(self, message: str, *, retriable: bool, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.retriable = retriable
        self.status = status
        self.code = code


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None


def graphql_url(server_url: str) -> str:
    if not server_url.startswith(("http://", "https://")):
        raise RequestFailed(f"server URL must start with http:// or https:// (not {server_url!r})", retriable=False)
    return server_url.rstrip("/") + "/graphql"


def _error_from_payload(payload: Any) -> tuple[str, str | None] | None:
    """(message, code) of the first GraphQL error in a response body, if any."""
    if not isinstance(payload, dict):
        return None
    errors = payload.get("errors")
    if not errors or not isinstance(errors, list):
        return None
    first = errors[0] if isinstance(errors[0], dict) else {}
    extensions = first.get("extensions") if isinstance(first.get("extensions"), dict) else {}
    code = extensions.get("code")
    return str(first.get("message") or "unknown error"), (str(code) if code is not None else None)


class GraphQLClient:
    def __init__(self, server_url: str, token: str, *, timeout: float = 30.0, ca_file: str | None = None) -> None:
        self.url = graphql_url(server_url)
        self._token = token
        self.timeout = timeout
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if ca_file:
            try:
                context = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise RequestFailed(f"cannot use ca_file {ca_file}: {exc}", retriable=False) from None
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    def _safe(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def execute(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        """The ``data`` of a successful response; :class:`RequestFailed` otherwise."""
        request = urllib.request.Request(
            self.url,
            data=json.dumps({"query": query, "variables": variables}, separators=(",", ":")).encode("utf-8"),
            method="POST",
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"ctops-agent/{__version__}",
            },
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = response.read(MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._transport_error(getattr(exc, "reason", exc)) from None
        except ValueError:  # http.client refuses the header; its message would show the token
            raise RequestFailed("the token or server URL holds characters HTTP cannot carry", retriable=False) from None
        try:
            payload = json.loads(body)
        except ValueError:
            raise RequestFailed(f"{self.url} answered something that is not JSON", retriable=True) from None
        error = _error_from_payload(payload)
        if error is not None:
            message, code = error
            label = f" ({code})" if code else ""
            text = self._safe(f"server refused the request{label}: {message}")
            raise RequestFailed(text, retriable=code in _RETRIABLE_CODES, code=code)
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, dict):
            raise RequestFailed(f"{self.url} answered without data", retriable=True)
        return data

    def _transport_error(self, reason: object) -> RequestFailed:
        if isinstance(reason, ssl.SSLCertVerificationError):  # trying again will not help
            message = f"cannot verify the server's certificate at {self.url}: {reason.verify_message} (see ca_file)"
            return RequestFailed(message, retriable=False)
        return RequestFailed(self._safe(f"cannot reach {self.url}: {reason}"), retriable=True)

    def _http_error(self, exc: urllib.error.HTTPError) -> RequestFailed:
        status = exc.code
        try:
            body = exc.read(MAX_RESPONSE_BYTES)
            detail = _error_from_payload(json.loads(body))
        except (OSError, ValueError):
            detail = None
        finally:
            exc.close()
        message, code = detail if detail else (exc.reason or "error", None)
        if 300 <= status < 400:
            location = exc.headers.get("Location", "?") if exc.headers else "?"
            message = f"redirected to {location}; set server_url to the final address"
        elif status == 401:
            message = f"token refused: {message}"
        elif status == 413:
            message = f"report too large for the server: {message}"
        return RequestFailed(
            self._safe(f"HTTP {status} from {self.url}: {message}"),
            retriable=status in _RETRIABLE_STATUS,
            status=status,
            code=code,
        )


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``initial``, doubled each retry up to ``maximum``,
    each delay shortened by up to half at random; ``attempts`` tries in all."""

    initial: float = 5.0
    maximum: float = 300.0
    attempts: int = 6

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        rng = rng or random.Random()
        for retry in range(self.attempts - 1):
            delay = min(self.maximum, self.initial * 2**retry)
            yield delay / 2 + rng.random() * delay / 2


def with_retries(
    call: Callable[[], Any],
    backoff: Backoff,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[RequestFailed, float], None] | None = None,
) -> Any:
    """``call()``, tried again after each retriable :class:`RequestFailed`."""
    delays = backoff.delays()
    while True:
        try:
            return call()
        except RequestFailed as exc:
            delay = next(delays, None) if exc.retriable else None
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(exc, delay)
            sleep(delay)


def enroll(
    server_url: str,
    enrollment_token: str,
    *,
    hostname: str,
    os_name: str,
    timeout: float = 30.0,
    ca_file: str | None = None,
) -> dict[str, Any]:
    """``enrollAgent``: ``{"agentToken": ..., "host": {"id", "hostname"}}``."""
    client = GraphQLClient(server_url, enrollment_token, timeout=timeout, ca_file=ca_file)
    variables = {"input": {"hostname": hostname, "os": os_name, "agentVersion": __version__}}
    result = client.execute(ENROLL_MUTATION, variables).get("enrollAgent")
    if not isinstance(result, dict) or not isinstance(result.get("agentToken"), str):
        raise RequestFailed("server answered enrollAgent without an agent token", retriable=False)
    return result


def send_report(
    client: GraphQLClient,
    parts: list[dict[str, Any]],
    backoff: Backoff,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[RequestFailed, float], None] | None = None,
) -> list[dict[str, Any]]:
    """Send every part in order (each retried on its own); the server's answers."""
    answers = []
    for part in parts:
        data = with_retries(
            lambda part=part: client.execute(REPORT_MUTATION, {"input": part}),
            backoff,
            sleep=sleep,
            on_retry=on_retry,
        )
        answer = data.get("reportCertificates")
        if not isinstance(answer, dict):
            raise RequestFailed("server answered reportCertificates without a result", retriable=False)
        answers.append(answer)
    return answers
