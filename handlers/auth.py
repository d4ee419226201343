"""Who may call the HTTP edge: the API token (X-Token) and the admin token (X-Admin-Token).

The API token comes from the environment, or from SSM Parameter Store / Secrets Manager. A
token read from AWS is cached for ``AUTH_TOKEN_TTL_S`` (Powertools parameters), so a rotated
token is picked up within that time without a redeploy. Every comparison is constant-time.
"""

from __future__ import annotations

import hmac
import logging
from typing import Protocol

from engine.errors import BackendUnavailable, Forbidden, Unauthorized
from engine.settings import Settings

logger = logging.getLogger(__name__)

_SECRETS_PREFIX = "secretsmanager:"


class TokenSource(Protocol):
    def current(self) -> str:
        """The token callers must present now."""
        ...


class StaticToken:
    def __init__(self, token: str) -> None:
        self._token = token

    def current(self) -> str:
        return self._token


class ParameterToken:
    """A token in SSM Parameter Store (SecureString decrypted) or in Secrets Manager."""

    def __init__(self, name: str, ttl_s: int) -> None:
        try:
            from aws_lambda_powertools.utilities import parameters
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError("AUTH_TOKEN_PARAMETER needs aws-lambda-powertools: pip install 'ml-inference-system[lambda]'") from exc
        self._parameters = parameters
        self._name = name
        self._ttl_s = ttl_s

    @property
    def is_secret(self) -> bool:
        return self._name.startswith(_SECRETS_PREFIX) or ":secretsmanager:" in self._name

    def current(self) -> str:
        try:
            if self.is_secret:
                value = self._parameters.get_secret(self._name.removeprefix(_SECRETS_PREFIX), max_age=self._ttl_s)
            else:
                value = self._parameters.get_parameter(self._name, decrypt=True, max_age=self._ttl_s)
        except Exception as exc:  # any AWS failure: the caller cannot be checked, which is not its fault
            logger.error("cannot read the API token from %s: %s", self._name, exc)
            raise BackendUnavailable(f"the API token store ({self._name}) cannot be read") from exc
        if not isinstance(value, str) or not value:
            raise BackendUnavailable(f"the API token parameter {self._name!r} is empty or not a string")
        return value


def token_source(settings: Settings) -> TokenSource:
    if settings.auth_token_parameter:
        return ParameterToken(settings.auth_token_parameter, settings.auth_token_ttl_s)
    return StaticToken(settings.auth_token.get_secret_value())


def _same(given: str | None, expected: bytes) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8"), expected)


class Authenticator:
    """Checks callers' tokens against the service's; built once per app from the settings."""

    def __init__(self, settings: Settings, tokens: TokenSource | None = None) -> None:
        self._tokens = tokens if tokens is not None else token_source(settings)
        admin = settings.admin_token.get_secret_value() if settings.admin_token is not None else ""
        self._admin_token = admin.encode("utf-8") if admin else None

    def check(self, token: str | None) -> None:
        """Raise ``Unauthorized`` unless ``token`` is the current API token."""
        if not _same(token, self._tokens.current().encode("utf-8")):
            raise Unauthorized("missing or invalid X-Token header")

    def check_admin(self, token: str | None) -> None:
        """Raise ``Forbidden`` when admin endpoints are off, ``Unauthorized`` unless ``token`` is the admin token."""
        if self._admin_token is None:
            raise Forbidden("admin endpoints are disabled: set ADMIN_TOKEN to enable them")
        if not _same(token, self._admin_token):
            raise Unauthorized("missing or invalid X-Admin-Token header")
