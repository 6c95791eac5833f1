"""aiobotocore clients for CloudWatch and EC2, with timeouts, retries and readable errors.

Credentials come from the standard AWS chain (environment, shared files, instance
role) unless given explicitly; they are never logged or put into messages. Every call
has connect and read timeouts; botocore's "standard" retry mode backs off on throttling
and transient errors, and whatever still fails surfaces as ``AwsError``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

THROTTLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "RequestThrottled", "SlowDown", "LimitExceededException",
})


class AwsError(Exception):
    """An AWS call failed after retries; ``throttled`` tells callers to back off harder."""

    def __init__(self, message: str, *, code: str = "", throttled: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.throttled = throttled


def as_aws_error(action: str, exc: Exception) -> AwsError:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        return AwsError(f"{action}: {code}: {error.get('Message', '')}"[:300], code=code,
                        throttled=code in THROTTLE_CODES)
    return AwsError(f"{action}: {exc.__class__.__name__}: {exc}"[:300], code=exc.__class__.__name__)


AWS_ERRORS: tuple[type[Exception], ...] = (ClientError, BotoCoreError)


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """Where and how to reach AWS (or moto, through ``endpoint_url``)."""

    region: str = "us-east-1"
    endpoint_url: str | None = None
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    max_attempts: int = 3
    access_key_id: str | None = None
    secret_access_key: str | None = None

    def __repr__(self) -> str:  # the secret must not reach logs through a repr
        return f"AwsSettings(region={self.region!r}, endpoint_url={self.endpoint_url!r})"


class AwsClients:
    """Long-lived CloudWatch and EC2 clients, opened lazily and closed together."""

    def __init__(self, settings: AwsSettings) -> None:
        self.settings = settings
        self._stack: contextlib.AsyncExitStack | None = None
        self._clients: dict[str, Any] = {}

    async def client(self, service: str) -> Any:
        if service not in self._clients:
            if self._stack is None:
                self._stack = contextlib.AsyncExitStack()
            s = self.settings
            config = AioConfig(
                connect_timeout=s.connect_timeout,
                read_timeout=s.read_timeout,
                retries={"max_attempts": s.max_attempts, "mode": "standard"},
            )
            kwargs: dict[str, Any] = {"region_name": s.region, "config": config}
            if s.endpoint_url:
                kwargs["endpoint_url"] = s.endpoint_url
            if s.access_key_id and s.secret_access_key:
                kwargs["aws_access_key_id"] = s.access_key_id
                kwargs["aws_secret_access_key"] = s.secret_access_key
            self._clients[service] = await self._stack.enter_async_context(
                get_session().create_client(service, **kwargs))
        return self._clients[service]

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        self._clients.clear()
        if stack is not None:
            await stack.aclose()
