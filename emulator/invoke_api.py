"""The Lambda API (``sam local start-lambda``), as boto3's ``lambda`` client and the AWS CLI call it.

``POST /2015-03-31/functions/{name}/invocations`` with ``X-Amz-Invocation-Type`` (RequestResponse,
Event, DryRun), ``X-Amz-Log-Type: Tail``, ``X-Amz-Client-Context`` and a qualifier (``Name:live``,
a qualified ARN, or ``?Qualifier=``). The read-only control-plane calls are answered from the
template: ListFunctions, GetFunction, GetFunctionConfiguration, ListVersionsByFunction,
ListAliases and GetAlias. Every error has the rest-json shape botocore parses: the
``x-amzn-ErrorType`` header and a ``{"Type": "User", "message": ...}`` body.

Payload limits are Lambda's (``emulator.limits``), checked while the body is read, so that an
oversized request never takes more memory than the limit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from emulator import limits, logs
from emulator.limits import TooLarge, read_bounded
from emulator.pool import Executor, Invocation, InvokeOptions, Throttled
from emulator.python_runtime import function_arn
from emulator.template import FunctionSpec

logger = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"
_THROTTLE_BACKOFF_S = (0.05, 1.0)
"""First and largest wait between two tries of a throttled Event invocation."""
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
Endpoint = Callable[[Request], Awaitable[Response]]
_OPERATIONS = "Invoke, ListFunctions, GetFunction, GetFunctionConfiguration, ListVersionsByFunction, ListAliases and GetAlias"


def error(status: int, error_type: str, message: str, **extra: str) -> Response:
    """An error as the Lambda API answers it; ResourceNotFoundException spells its field ``Message``."""
    field = "Message" if error_type == "ResourceNotFoundException" else "message"
    return JSONResponse(
        {"Type": "User", field: message, **extra},
        status_code=status,
        headers={"x-amzn-ErrorType": error_type, "x-amzn-RequestId": str(uuid.uuid4())},
    )


@dataclass(frozen=True)
class Target:
    """A function as named in a request: its name, and the qualifier it carried (None: unqualified)."""

    name: str
    qualifier: str | None


def parse_function_name(identifier: str) -> Target:
    """``Name``, ``Name:qualifier``, ``123456789012:function:Name[:qualifier]`` or a full ARN."""
    parts = identifier.split(":")
    if parts[0] == "arn" and len(parts) >= 7:
        parts = parts[6:]
    elif len(parts) >= 3 and parts[1] == "function":
        parts = parts[2:]
    return Target(parts[0], parts[1] if len(parts) > 1 and parts[1] else None)


def qualified_arn(name: str, qualifier: str | None) -> str:
    return function_arn(name) + (f":{qualifier}" if qualifier else "")


def _not_found(name: str, qualifier: str | None) -> Response:
    return error(404, "ResourceNotFoundException", f"Function not found: {qualified_arn(name, qualifier)}")


def decode_client_context(header: str | None) -> str | None:
    """The ClientContext as JSON text; ``ValueError`` when it is not base64 of a JSON object, or too long."""
    if header is None:
        return None
    if len(header) > limits.CLIENT_CONTEXT_BYTES.value:
        raise ValueError(f"Client context must be at most {limits.CLIENT_CONTEXT_BYTES.value} bytes of base64-encoded JSON.")
    try:
        decoded = json.loads(base64.b64decode(header, validate=True))
    except (binascii.Error, ValueError):
        decoded = None
    if not isinstance(decoded, dict):
        # AWS's message, as boto/boto3#2153 quotes it.
        raise ValueError("Client context must be a valid Base64-encoded JSON object.")
    return json.dumps(decoded)


def _error_type(invocation: Invocation) -> str:
    if invocation.error_type:
        return invocation.error_type
    try:
        payload = json.loads(invocation.payload)
    except ValueError:
        return "Unhandled"
    return str(payload.get("errorType", "Unhandled")) if isinstance(payload, dict) else "Unhandled"


class InvokeApi:
    """The Lambda API over the functions' executors.

    ``event_retry_delays_s``: one retry of a failed Event invocation per wait, at most
    ``limits.EVENT_RETRIES`` of them (Lambda's MaximumRetryAttempts, 2 by default).
    """

    def __init__(self, executors: Mapping[str, Executor], *, event_retry_delays_s: Sequence[float] = limits.EVENT_RETRY_DELAYS_S) -> None:
        if len(event_retry_delays_s) > limits.EVENT_RETRIES.value or any(delay < 0 for delay in event_retry_delays_s):
            raise ValueError(f"at most {limits.EVENT_RETRIES.value} retry delays, none negative: {tuple(event_retry_delays_s)}")
        self._executors = executors
        self._retry_delays_s = tuple(event_retry_delays_s)
        self._loaded = datetime.now(UTC)
        self._background: set[asyncio.Task[None]] = set()
        functions = "/2015-03-31/functions"
        operations: dict[str, dict[str, Endpoint]] = {
            f"{functions}/{{name}}/invocations": {"POST": self.invoke},
            functions: {"GET": self.list_functions},
            f"{functions}/": {"GET": self.list_functions},
            f"{functions}/{{name}}": {"GET": self.get_function},
            f"{functions}/{{name}}/configuration": {"GET": self.get_function_configuration},
            f"{functions}/{{name}}/versions": {"GET": self.list_versions},
            f"{functions}/{{name}}/aliases": {"GET": self.list_aliases},
            f"{functions}/{{name}}/aliases/{{alias}}": {"GET": self.get_alias},
        }
        routes = [Route(path, _by_method(by_method), methods=_METHODS) for path, by_method in operations.items()]
        self.app = Starlette(routes=routes)
        self.app.router.redirect_slashes = False
        self.app.router.default = _unsupported

    async def close(self) -> None:
        """Drop the queued Event invocations (their retries included)."""
        tasks, self._background = self._background, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _resolve(self, request: Request) -> tuple[Executor, Target, str] | Response:
        """The executor, the target and its executed version; or the error response."""
        target = parse_function_name(request.path_params["name"])
        query_qualifier = request.query_params.get("Qualifier") or None
        if query_qualifier and target.qualifier and query_qualifier != target.qualifier:
            return error(
                400,
                "InvalidParameterValueException",
                "The derived qualifier from the function name does not match the specified qualifier.",
            )
        target = Target(target.name, target.qualifier or query_qualifier)
        executor = self._executors.get(target.name)
        version = executor.spec.executed_version(target.qualifier) if executor is not None else None
        if executor is None or version is None:
            return _not_found(target.name, target.qualifier)
        return executor, target, version

    async def invoke(self, request: Request) -> Response:
        resolved = self._resolve(request)
        if isinstance(resolved, Response):
            return resolved
        executor, target, version = resolved
        invocation_type = request.headers.get("x-amz-invocation-type", "RequestResponse")
        if invocation_type not in ("RequestResponse", "Event", "DryRun"):
            return error(400, "InvalidParameterValueException", f"Unsupported invocation type {invocation_type}")
        limit = limits.EVENT_REQUEST_BYTES if invocation_type == "Event" else limits.SYNC_REQUEST_BYTES
        try:
            payload = await read_bounded(request.stream(), limit.value) or b"{}"
        except TooLarge as exc:
            return _too_large(invocation_type, exc.size)
        try:
            json.loads(payload)
        except ValueError as exc:
            return error(400, "InvalidRequestContentException", f"Could not parse request body into json: {exc}")
        client_context = None
        if invocation_type == "RequestResponse":
            # "Lambda passes the ClientContext object to your function for synchronous invocations only."
            try:
                client_context = decode_client_context(request.headers.get("x-amz-client-context"))
            except ValueError as exc:
                return error(400, "InvalidRequestContentException", str(exc))
        options = InvokeOptions(
            version=version,
            invoked_arn=qualified_arn(target.name, target.qualifier),
            client_context=client_context,
            trace_id=request.headers.get("x-amzn-trace-id"),
        )
        if invocation_type == "DryRun":
            return Response(status_code=204)
        if invocation_type == "Event":
            request_id = str(uuid.uuid4())
            self._queue(executor, payload, request_id, options)
            return Response(status_code=202, headers={"x-amzn-RequestId": request_id})
        try:
            invocation = await executor.invoke(payload, options=options)
        except Throttled as exc:
            return error(429, "TooManyRequestsException", str(exc), Reason="ReservedFunctionConcurrentInvocationLimitExceeded")
        headers = {"x-amzn-RequestId": invocation.request_id, "X-Amz-Executed-Version": version}
        if invocation.function_error:
            headers["X-Amz-Function-Error"] = "Unhandled"
        if request.headers.get("x-amz-log-type") == "Tail":
            headers["X-Amz-Log-Result"] = logs.tail(invocation.log)
        return Response(invocation.payload, status_code=200, headers=headers, media_type="application/json")

    # Event invocations: Lambda's queue, its retries after a function error, its patience while throttled.

    def _queue(self, executor: Executor, payload: bytes, request_id: str, options: InvokeOptions) -> None:
        task = asyncio.create_task(self._run_event(executor, payload, request_id, options))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run_event(self, executor: Executor, payload: bytes, request_id: str, options: InvokeOptions) -> None:
        """One Event invocation, then a retry after each function error, with the same request id (as Lambda)."""
        name = executor.spec.name
        deadline = asyncio.get_running_loop().time() + limits.EVENT_MAX_AGE_S.value
        retries = len(self._retry_delays_s)
        for attempt in range(retries + 1):
            invocation = await self._invoke_while_throttled(executor, payload, request_id, options, deadline)
            if invocation is None or not invocation.function_error:
                return
            if attempt == retries:
                logger.warning("%s: event %s failed (%s) after %d retries; dropped", name, request_id, _error_type(invocation), retries)
                return
            delay = self._retry_delays_s[attempt]
            logger.info(
                "%s: event %s failed (%s); retry %d of %d in %g s", name, request_id, _error_type(invocation), attempt + 1, retries, delay
            )
            await asyncio.sleep(delay)

    async def _invoke_while_throttled(
        self, executor: Executor, payload: bytes, request_id: str, options: InvokeOptions, deadline: float
    ) -> Invocation | None:
        """The invocation, once an environment is free; None when the event's maximum age passed first."""
        loop = asyncio.get_running_loop()
        delay, largest = _THROTTLE_BACKOFF_S
        while True:
            try:
                return await executor.invoke(payload, request_id, options)
            except Throttled:
                if loop.time() >= deadline:
                    logger.warning(
                        "%s: event %s dropped, still throttled at its maximum age of %d s",
                        executor.spec.name,
                        request_id,
                        limits.EVENT_MAX_AGE_S.value,
                    )
                    return None
                await asyncio.sleep(delay)
                delay = min(delay * 2, largest)

    # The control plane, read-only, from the template.

    async def list_functions(self, request: Request) -> Response:
        functions = [self._configuration(executor.spec, "$LATEST", None) for executor in self._executors.values()]
        return JSONResponse({"Functions": functions})

    async def get_function(self, request: Request) -> Response:
        resolved = self._resolve(request)
        if isinstance(resolved, Response):
            return resolved
        executor, target, version = resolved
        spec = executor.spec
        configuration = self._configuration(spec, version, target.qualifier)
        code = {"RepositoryType": "S3", "Location": spec.code_root.as_uri()}
        if configuration["PackageType"] == "Image":
            code = {"RepositoryType": "ECR", "ImageUri": f"{spec.name.lower()}:latest"}
        return JSONResponse({"Configuration": configuration, "Code": code, "Tags": {}})

    async def get_function_configuration(self, request: Request) -> Response:
        resolved = self._resolve(request)
        if isinstance(resolved, Response):
            return resolved
        executor, target, version = resolved
        return JSONResponse(self._configuration(executor.spec, version, target.qualifier))

    async def list_versions(self, request: Request) -> Response:
        resolved = self._resolve(request)
        if isinstance(resolved, Response):
            return resolved
        spec = resolved[0].spec
        versions = [self._configuration(spec, "$LATEST", "$LATEST")]
        if spec.published_version is not None:
            versions.append(self._configuration(spec, spec.published_version, spec.published_version))
        return JSONResponse({"Versions": versions})

    async def list_aliases(self, request: Request) -> Response:
        resolved = self._resolve(request)
        if isinstance(resolved, Response):
            return resolved
        spec = resolved[0].spec
        return JSONResponse({"Aliases": [_alias(spec)] if spec.alias else []})

    async def get_alias(self, request: Request) -> Response:
        resolved = self._resolve(request)
        if isinstance(resolved, Response):
            return resolved
        spec, alias = resolved[0].spec, request.path_params["alias"]
        if alias != spec.alias:
            return error(404, "ResourceNotFoundException", f"Cannot find alias arn: {qualified_arn(spec.name, alias)}")
        return JSONResponse(_alias(spec))

    def _configuration(self, spec: FunctionSpec, version: str, qualifier: str | None) -> dict[str, Any]:
        """GetFunctionConfiguration's answer for one version of a function, as the template declares it."""
        image = spec.dockerfile is not None
        arn_qualifier = version if qualifier and version != "$LATEST" else qualifier
        configuration: dict[str, Any] = {
            "FunctionName": spec.name,
            "FunctionArn": qualified_arn(spec.name, arn_qualifier),
            "Role": f"arn:aws:iam::{ACCOUNT_ID}:role/{spec.name}Role",
            "CodeSize": 0,
            "Description": "",
            "Timeout": int(spec.timeout_s),
            "MemorySize": spec.memory_mb,
            "LastModified": self._loaded.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self._loaded.microsecond // 1000:03d}+0000",
            "Version": version,
            "Environment": {"Variables": dict(spec.environment)},
            "TracingConfig": {"Mode": "PassThrough"},
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Image" if image else "Zip",
            "Architectures": ["x86_64"],
            "EphemeralStorage": {"Size": spec.ephemeral_storage_mb},
        }
        if image:
            configuration["ImageConfigResponse"] = {"ImageConfig": {"Command": [spec.handler]}}
        else:
            # The template's Runtime; without one, the version of the interpreter the emulator runs it with.
            configuration["Runtime"] = spec.runtime or f"python{sys.version_info.major}.{sys.version_info.minor}"
            configuration["Handler"] = spec.handler
        return configuration


def _alias(spec: FunctionSpec) -> dict[str, Any]:
    return {
        "AliasArn": qualified_arn(spec.name, spec.alias),
        "Name": spec.alias,
        "FunctionVersion": spec.published_version,
        "Description": "",
        "RevisionId": str(uuid.uuid5(uuid.NAMESPACE_URL, qualified_arn(spec.name, spec.alias))),
    }


def _by_method(endpoints: Mapping[str, Endpoint]) -> Endpoint:
    async def dispatch(request: Request) -> Response:
        endpoint = endpoints.get(request.method)
        return await endpoint(request) if endpoint is not None else await _unsupported_operation(request)

    return dispatch


async def _unsupported_operation(request: Request) -> Response:
    async for _chunk in request.stream():
        pass
    message = f"{request.method} {request.url.path} is not an operation the local Lambda API answers (it answers {_OPERATIONS})"
    return error(404, "UnknownOperationException", message)


async def _unsupported(scope: Scope, receive: Receive, send: Send) -> None:
    response = await _unsupported_operation(Request(scope, receive))
    await response(scope, receive, send)


def _too_large(invocation_type: str, size: int) -> Response:
    # The messages Lambda answers (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
    # gives the limits; the texts are the service's, as SDKs report them).
    if invocation_type == "Event":
        limit = limits.EVENT_REQUEST_BYTES.value
        message = f"{size} byte payload is too large for the Event invocation type (limit {limit} bytes)"
    else:
        message = f"Request must be smaller than {limits.SYNC_REQUEST_BYTES.value} bytes for the InvokeFunction operation"
    return error(413, "RequestEntityTooLargeException", message)
