"""Tokens: constant-time checks, and the API token from SSM Parameter Store or Secrets Manager (moto server), with rotation."""

from __future__ import annotations

import time
from collections.abc import Iterator

import boto3
import pytest

from engine.errors import BackendUnavailable, Forbidden, Unauthorized
from handlers.auth import Authenticator, ParameterToken, StaticToken, token_source
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
    assert isinstance(source, StaticToken) and source.current() == "abc"


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
