"""Print template.yaml as CloudFormation, the way `sam build` + deploy would transform it.

Runs in .venv-tools (it needs samtranslator): ``.venv-tools/bin/python tests/infra/sam_translate.py template.yaml``.
The images get a placeholder ImageUri, as `sam build` would fill in. No AWS call is made: a
managed policy lookup would fail the run.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class _NoManagedPolicyLookups:
    def load(self) -> dict[str, str]:
        raise RuntimeError("the template names a managed policy by name: that needs IAM, use its ARN")


def main(path: str) -> None:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # the translator wants a region; no call is made
    with open(path, encoding="utf-8") as handle:
        template: dict[str, Any] = yaml_parse(handle.read())
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function" and resource["Properties"].get("PackageType") == "Image":
            resource["Properties"].setdefault("ImageUri", "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml-inference:test")
    json.dump(transform(template, {"AWS::Region": "us-east-1"}, _NoManagedPolicyLookups()), sys.stdout, indent=1, default=str)


if __name__ == "__main__":
    main(sys.argv[1])
