"""Tiny Lambda handlers of the SAM workflow tests (templates/workflow.yaml): what the function was given."""

from __future__ import annotations

import os
from typing import Any

VARIABLES = ("STAGE", "MODE", "WORKERS", "TAGS", "RESULTS_URI")


def settings(event: Any, context: Any) -> dict[str, Any]:
    """The template's variables as the function sees them, and the stage of an API Gateway event."""
    stage = (event.get("requestContext") or {}).get("stage") if isinstance(event, dict) else None
    return {"environment": {name: os.environ.get(name) for name in VARIABLES}, "stage": stage}


def pid(event: Any, context: Any) -> dict[str, Any]:
    """The environment's process, so that a test sees which environment answered."""
    print(f"pid: request {context.aws_request_id} in process {os.getpid()}")
    return {"pid": os.getpid()}
