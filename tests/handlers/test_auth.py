"""Tokens: constant-time checks, and the API token from SSM Parameter Store or Secrets Manager (moto server), with rotation."""

from __future__ import annotations

import time
from collections.abc import Iterator

import boto3
import pytest

from engine.errors import BackendUnavailable, Forbidden, Unauthorized
from handlers.auth import Authenticator, InsecureConfiguration, ParameterToken, StaticTokens, check_production, token_source
from tests.conftest import make_settings
from tests.moto_server import CREDENTIALS_ENV, moto_server


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in {**CREDENTIALS_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    return endpoint


def _auth(parameter: str, ttl_s: int) -> Authenticator:
    return Authenticator(make_settings(auth_token_parameter=parameter, auth_token_ttl_s=ttl_s, auth_token="not-this-one"))


def test_static_token_by_default() -> None:
    source = token_source(make_settings(auth_token="abc"))
    assert isinstance(source, StaticTokens) and source.current() == ("abc",)


def test_only_the_exact_token_passes() -> None:
    auth = Authenticator(make_settings())
    auth.check("secret-token")
    for token in (None, "", "secret-token ", "SECRET-TOKEN", "secret-tokenx", "sécret-token"):
        with pytest.raises(Unauthorized):
            auth.check(token)


def test_admin_endpoints_are_off_without_an_admin_token() -> None:
    with pytest.raises(Forbidden, match="ADMIN_TOKEN"):
        Authenticator(make_settings()).check_admin("anything")
    auth = Authenticator(make_settings(admin_token="admin-secret"))
    auth.check_admin("admin-secret")
    for token in (None, "", "secret-token", "admin-secret2"):
        with pytest.raises(Unauthorized, match="X-Admin-Token"):
            auth.check_admin(token)


def test_ssm_parameter_token_is_rotated_after_its_ttl(aws: str) -> None:
    ssm = boto3.session.Session().client("ssm")
    ssm.put_parameter(Name="/mlinfer/token", Value="token-one", Type="SecureString")
    auth = _auth("/mlinfer/token", ttl_s=1)
    auth.check("token-one")
    with pytest.raises(Unauthorized):
        auth.check("not-this-one")  # AUTH_TOKEN is ignored when a parameter is named
    ssm.put_parameter(Name="/mlinfer/token", Value="token-two", Type="SecureString", Overwrite=True)
    auth.check("token-one")  # still cached
    time.sleep(1.2)
    auth.check("token-two")
    with pytest.raises(Unauthorized):
        auth.check("token-one")


@pytest.mark.parametrize("style", ["prefix", "arn"])
def test_secrets_manager_token(aws: str, style: str) -> None:
    secrets = boto3.session.Session().client("secretsmanager")
    name = f"mlinfer-token-{style}"
    arn = secrets.create_secret(Name=name, SecretString="secret-value")["ARN"]
    parameter = f"secretsmanager:{name}" if style == "prefix" else arn
    assert ParameterToken(parameter, 0).is_secret
    _auth(parameter, ttl_s=0).check("secret-value")


def test_a_missing_parameter_fails_the_request_loudly(aws: str) -> None:
    auth = _auth("/mlinfer/absent", ttl_s=0)
    with pytest.raises(BackendUnavailable, match="/mlinfer/absent"):
        auth.check("anything")


def test_auth_tokens_are_accepted_besides_auth_token_for_rotation() -> None:
    auth = Authenticator(make_settings(auth_token="new-token", auth_tokens="old-token, older-token,,"))
    for token in ("new-token", "old-token", "older-token"):
        auth.check(token)
    for token in (None, "", ",", "old-token,older-token", "secret-token", " old-token"):
        with pytest.raises(Unauthorized):
            auth.check(token)


def test_an_empty_token_never_matches() -> None:
    auth = Authenticator(make_settings(auth_token="", auth_tokens=" , "))
    for token in (None, "", " "):
        with pytest.raises(Unauthorized):
            auth.check(token)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"auth_token": "secret-token"},
        {"auth_token": ""},
        {"auth_token": "  "},
        {"auth_token": "mine", "auth_tokens": "old,secret-token"},
    ],
    ids=["default", "explicit-default", "empty", "blank", "default-among-auth-tokens"],
)
def test_production_refuses_the_default_token_or_none(values: dict[str, str]) -> None:
    settings = make_settings(environment="production", **values)
    with pytest.raises(InsecureConfiguration, match="ENVIRONMENT=production.*AUTH_TOKEN"):
        check_production(settings)
    with pytest.raises(InsecureConfiguration):
        Authenticator(settings)
    Authenticator(make_settings(**values))  # development, the default, accepts them: it is for local use


def test_production_accepts_own_tokens_and_a_token_parameter() -> None:
    Authenticator(make_settings(environment="production", auth_token="mine", auth_tokens="old")).check("old")
    check_production(make_settings(environment="production", auth_token_parameter="/mlinfer/token"))


def test_create_app_refuses_before_loading_any_model(tmp_path: object) -> None:
    from handlers.app import create_app

    with pytest.raises(InsecureConfiguration, match="ENVIRONMENT=production"):
        create_app(make_settings(environment="production", model_registry_path="/nonexistent/registry.yaml"))


def test_metrics_token_as_bearer_or_x_token() -> None:
    open_metrics = Authenticator(make_settings())
    assert not open_metrics.metrics_protected
    open_metrics.check_metrics({})
    auth = Authenticator(make_settings(metrics_token="scrape-me"))
    assert auth.metrics_protected
    auth.check_metrics({"authorization": "Bearer scrape-me"})
    auth.check_metrics({"authorization": "bearer  scrape-me "})
    auth.check_metrics({"x-token": "scrape-me"})
    for headers in ({}, {"authorization": "Basic scrape-me"}, {"authorization": "Bearer wrong"}, {"x-token": "secret-token"}):
        with pytest.raises(Unauthorized, match="METRICS_TOKEN"):
            auth.check_metrics(headers)


def test_a_parameter_may_hold_several_comma_separated_tokens(aws: str) -> None:
    ssm = boto3.session.Session().client("ssm")
    ssm.put_parameter(Name="/mlinfer/tokens", Value="token-new, token-old", Type="SecureString")
    auth = Authenticator(make_settings(auth_token_parameter="/mlinfer/tokens", auth_token_ttl_s=0, environment="production"))
    auth.check("token-new")
    auth.check("token-old")
    with pytest.raises(Unauthorized):
        auth.check("token-new, token-old")
    ssm.put_parameter(Name="/mlinfer/tokens", Value=" , ", Type="SecureString", Overwrite=True)
    with pytest.raises(BackendUnavailable, match="empty"):
        auth.check("token-new")
