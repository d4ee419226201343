"""The API token from SSM Parameter Store or Secrets Manager (moto server), and its rotation."""

from __future__ import annotations

import time
from collections.abc import Iterator

import boto3
import pytest

from engine.errors import BackendUnavailable, Unauthorized
from engine.facade import InferenceEngine
from engine.factory import build_engine
from engine.secrets import ParameterToken, StaticToken, token_source
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


def _engine(parameter: str, ttl_s: int) -> InferenceEngine:
    return build_engine(make_settings(auth_token_parameter=parameter, auth_token_ttl_s=ttl_s, auth_token="not-this-one"))


def test_static_token_by_default() -> None:
    source = token_source(make_settings(auth_token="abc"))
    assert isinstance(source, StaticToken) and source.current() == "abc"


def test_ssm_parameter_token_is_rotated_after_its_ttl(aws: str) -> None:
    ssm = boto3.session.Session().client("ssm")
    ssm.put_parameter(Name="/mlinfer/token", Value="token-one", Type="SecureString")
    engine = _engine("/mlinfer/token", ttl_s=1)
    engine.authenticate("token-one")
    with pytest.raises(Unauthorized):
        engine.authenticate("not-this-one")  # AUTH_TOKEN is ignored when a parameter is named
    ssm.put_parameter(Name="/mlinfer/token", Value="token-two", Type="SecureString", Overwrite=True)
    engine.authenticate("token-one")  # still cached
    time.sleep(1.2)
    engine.authenticate("token-two")
    with pytest.raises(Unauthorized):
        engine.authenticate("token-one")


@pytest.mark.parametrize("style", ["prefix", "arn"])
def test_secrets_manager_token(aws: str, style: str) -> None:
    secrets = boto3.session.Session().client("secretsmanager")
    name = f"mlinfer-token-{style}"
    arn = secrets.create_secret(Name=name, SecretString="secret-value")["ARN"]
    parameter = f"secretsmanager:{name}" if style == "prefix" else arn
    assert ParameterToken(parameter, 0).is_secret
    _engine(parameter, ttl_s=0).authenticate("secret-value")


def test_a_missing_parameter_fails_the_request_loudly(aws: str) -> None:
    engine = _engine("/mlinfer/absent", ttl_s=0)
    with pytest.raises(BackendUnavailable, match="/mlinfer/absent"):
        engine.authenticate("anything")
