"""Who may call the HTTP edge: the API tokens (X-Token), the admin token (X-Admin-Token) and
the metrics token (``Authorization: Bearer``, as Prometheus sends it, or X-Token).

The API tokens are AUTH_TOKEN and AUTH_TOKENS (comma-separated, for rotation), or the value of
an SSM Parameter Store / Secrets Manager entry (comma-separated too). A value read from AWS is
cached for ``AUTH_TOKEN_TTL_S`` (Powertools parameters), so a rotated token is picked up within
that time without a redeploy. Every comparison is constant-time; an empty token never matches.

``ENVIRONMENT=production`` refuses to build an ``Authenticator`` with the development default
token or no token at all, so that no edge (``mlinfer serve``, the Lambda HTTP handler) starts
serving the public API with ``secret-token``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Mapping
from typing import Protocol

from engine.errors import BackendUnavailable, Forbidden, Unauthorized
from engine.settings import Settings

logger = logging.getLogger(__name__)

_SECRETS_PREFIX = "secretsmanager:"
DEFAULT_TOKEN = "secret-token"


class InsecureConfiguration(RuntimeError):
    """The settings would serve the API unprotected in production; the edge refuses to start."""


def split_tokens(value: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``: the tokens of a comma-separated value, blanks dropped."""
    return tuple(token for token in (part.strip() for part in value.split(",")) if token)


class TokenSource(Protocol):
    def current(self) -> tuple[str, ...]:
        """The tokens callers may present now (any one of them passes)."""
        ...


class StaticTokens:
    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = tuple(token for token in tokens if token)

    def current(self) -> tuple[str, ...]:
        return self._tokens


class ParameterToken:
    """Tokens in SSM Parameter Store (SecureString decrypted) or in Secrets Manager; the value
    may hold several, comma-separated (rotation)."""

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

    def current(self) -> tuple[str, ...]:
        try:
            if self.is_secret:
                value = self._parameters.get_secret(self._name.removeprefix(_SECRETS_PREFIX), max_age=self._ttl_s)
            else:
                value = self._parameters.get_parameter(self._name, decrypt=True, max_age=self._ttl_s)
        except Exception as exc:  # any AWS failure: the caller cannot be checked, which is not its fault
            logger.error("cannot read the API token from %s: %s", self._name, exc)
            raise BackendUnavailable(f"the API token store ({self._name}) cannot be read") from exc
        tokens = split_tokens(value) if isinstance(value, str) else ()
        if not tokens:
            raise BackendUnavailable(f"the API token parameter {self._name!r} is empty or not a string")
        return tokens


def configured_tokens(settings: Settings) -> tuple[str, ...]:
    """AUTH_TOKEN, then each of AUTH_TOKENS; blanks dropped."""
    extra = split_tokens(settings.auth_tokens.get_secret_value()) if settings.auth_tokens is not None else ()
    return tuple(token for token in (settings.auth_token.get_secret_value().strip(), *extra) if token)


def token_source(settings: Settings) -> TokenSource:
    if settings.auth_token_parameter:
        return ParameterToken(settings.auth_token_parameter, settings.auth_token_ttl_s)
    return StaticTokens(configured_tokens(settings))


def check_production(settings: Settings) -> None:
    """Raise ``InsecureConfiguration`` when ENVIRONMENT=production would accept the default
    token or has no token. A token from AUTH_TOKEN_PARAMETER is checked when it is read."""
    if settings.environment != "production" or settings.auth_token_parameter:
        return
    tokens = configured_tokens(settings)
    if not tokens:
        raise InsecureConfiguration("ENVIRONMENT=production needs an API token: set AUTH_TOKEN (or AUTH_TOKEN_PARAMETER)")
    if DEFAULT_TOKEN in tokens:
        raise InsecureConfiguration(
            f"ENVIRONMENT=production refuses the development default token {DEFAULT_TOKEN!r}: "
            "set AUTH_TOKEN (and AUTH_TOKENS) to secrets of your own, or AUTH_TOKEN_PARAMETER"
        )


def _matches(given: str | None, expected: Iterable[str]) -> bool:
    if not given:
        return False
    encoded = given.encode("utf-8", "surrogatepass")
    # Compare with every token, so the time taken says nothing about which one matched.
    return sum(hmac.compare_digest(encoded, token.encode("utf-8")) for token in expected) > 0


def bearer(authorization: str | None) -> str | None:
    """The credentials of ``Authorization: Bearer <token>``, else None."""
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


class Authenticator:
    """Checks callers' tokens against the service's; built once per app from the settings."""

    def __init__(self, settings: Settings, tokens: TokenSource | None = None) -> None:
        check_production(settings)
        self._tokens = tokens if tokens is not None else token_source(settings)
        admin = settings.admin_token.get_secret_value() if settings.admin_token is not None else ""
        self._admin_token = admin or None
        metrics = settings.metrics_token.get_secret_value() if settings.metrics_token is not None else ""
        self._metrics_token = metrics or None

    def check(self, token: str | None) -> None:
        """Raise ``Unauthorized`` unless ``token`` is one of the current API tokens."""
        if not _matches(token, self._tokens.current()):
            raise Unauthorized("missing or invalid X-Token header")

    def check_admin(self, token: str | None) -> None:
        """Raise ``Forbidden`` when admin endpoints are off, ``Unauthorized`` unless ``token`` is the admin token."""
        if self._admin_token is None:
            raise Forbidden("admin endpoints are disabled: set ADMIN_TOKEN to enable them")
        if not _matches(token, (self._admin_token,)):
            raise Unauthorized("missing or invalid X-Admin-Token header")

    @property
    def metrics_protected(self) -> bool:
        return self._metrics_token is not None

    def check_metrics(self, headers: Mapping[str, str]) -> None:
        """With METRICS_TOKEN set, raise ``Unauthorized`` unless the request carries it as
        ``Authorization: Bearer`` or ``X-Token``."""
        if self._metrics_token is None:
            return
        given = bearer(headers.get("authorization")) or headers.get("x-token")
        if not _matches(given, (self._metrics_token,)):
            raise Unauthorized("missing or invalid metrics token (Authorization: Bearer, or X-Token; METRICS_TOKEN)")
