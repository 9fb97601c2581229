"""Rejects, as AWS would, every JSON-protocol request to ECS, ECR, DynamoDB
and CloudWatch Logs that does not fit the service's model: the botocore
model that ships with moto (the same model the AWS SDKs are generated
from). moto trusts its callers: it accepts a missing required member, a
string where a number belongs, an unknown enum value, a name too long for
its pattern. AWS does not, so a sandbox that accepts them would hide a
request that fails on the first real deploy.

What is checked, for the request's members and everything nested in them:
required members, JSON types, enum values, minimum and maximum lengths and
values, and patterns. A rejection is answered as AWS answers it: HTTP 400
with `ValidationException` and the message AWS's front end writes ("1
validation error detected: Value '…' at '…' failed to satisfy constraint:
…"). `ValidationException` is among the errors common to all AWS services
(ECS API Reference, "Common Errors": "The input fails to satisfy the
constraints specified by an AWS service", 400).

Every rejection is also appended, one JSON object per line, to
`rejected-requests.ndjson` in the sandbox's directory, so the tests can
require that none happened and `sandbox status` can show them.
"""

import json
import os
import re

import botocore.session
from moto.core.responses import BaseResponse

SERVICES = ("ecs", "ecr", "dynamodb", "logs")
REJECTIONS_FILE = "rejected-requests.ndjson"

_models = None
_patterns = {}


def _models_by_target_prefix():
    global _models
    if _models is None:
        session = botocore.session.get_session()
        _models = {}
        for name in SERVICES:
            model = session.get_service_model(name)
            _models[model.metadata["targetPrefix"]] = model
    return _models


def _pattern(text):
    """The model's pattern as a Python regex; None when Python's `re` cannot
    read it (a few use Java classes such as \\p{...}): then it is not checked."""
    if text not in _patterns:
        try:
            _patterns[text] = re.compile(text)
        except re.error:
            _patterns[text] = None
    return _patterns[text]


def _shown(value):
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check(shape, value, path, errors):
    """Appends to `errors` what AWS would say of `value` at `path`."""

    def fail(constraint):
        errors.append(f"Value '{_shown(value)}' at '{path}' failed to satisfy constraint: {constraint}")

    kind = shape.type_name
    metadata = shape.metadata
    if kind == "structure":
        if not isinstance(value, dict):
            return fail("Member must be an object")
        for name in shape.required_members:
            if value.get(name) is None:
                errors.append(f"Value null at '{_join(path, name)}' failed to satisfy constraint: Member must not be null")
        for name, member in value.items():
            if member is not None and name in shape.members:
                _check(shape.members[name], member, _join(path, name), errors)
        return
    if kind == "list":
        if not isinstance(value, list):
            return fail("Member must be a list")
        _length(metadata, len(value), fail)
        for index, item in enumerate(value, start=1):
            _check(shape.member, item, f"{path}.{index}.member", errors)
        return
    if kind == "map":
        if not isinstance(value, dict):
            return fail("Member must be a map")
        _length(metadata, len(value), fail)
        for key, item in value.items():
            _check(shape.key, key, f"{path}.{key}.key", errors)
            _check(shape.value, item, f"{path}.{key}.value", errors)
        return
    if kind == "string":
        if not isinstance(value, str):
            return fail("Member must be a string")
        if shape.enum and value not in shape.enum:
            return fail(f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
        _length(metadata, len(value), fail)
        pattern = metadata.get("pattern")
        # The whole value must match, as AWS checks it: ECR refuses
        # `Guestbook` as a repository name ("failed to satisfy constraint:
        # 'must satisfy regular expression …'") though `uestbook` matches.
        if pattern and _pattern(pattern) and not _pattern(pattern).fullmatch(value):
            fail(f"Member must satisfy regular expression pattern: {pattern}")
        return
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            return fail("Member must be an integer")
        if "min" in metadata and value < metadata["min"]:
            fail(f"Member must have value greater than or equal to {metadata['min']}")
        if "max" in metadata and value > metadata["max"]:
            fail(f"Member must have value less than or equal to {metadata['max']}")
        return
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("Member must be a number")
        return
    if kind == "boolean":
        if not isinstance(value, bool):
            fail("Member must be a boolean")
        return
    if kind == "blob":
        # JSON protocols carry blobs as base64 text.
        if not isinstance(value, str):
            fail("Member must be base64-encoded text")
        return
    if kind == "timestamp":
        # Epoch seconds in JSON protocols; SDKs may also send ISO 8601 text.
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            fail("Member must be a timestamp")


def _length(metadata, length, fail):
    if "min" in metadata and length < metadata["min"]:
        fail(f"Member must have length greater than or equal to {metadata['min']}")
    if "max" in metadata and length > metadata["max"]:
        fail(f"Member must have length less than or equal to {metadata['max']}")


def _join(path, name):
    return f"{path}.{name}" if path else name


def problems(target, body):
    """(service, operation, errors) for a request with this X-Amz-Target
    and body, or None when it is not one of the checked services'."""
    prefix, _, operation = (target or "").rpartition(".")
    model = _models_by_target_prefix().get(prefix)
    if model is None or operation not in model.operation_names:
        return None
    try:
        params = json.loads(body) if body else {}
    except ValueError:
        return model.service_name, operation, ["the body is not JSON"]
    errors = []
    input_shape = model.operation_model(operation).input_shape
    if input_shape is not None:
        _check(input_shape, params, "", errors)
    return model.service_name, operation, errors


def _record(service, operation, errors):
    directory = os.environ.get("XTASK_SANDBOX_DIR")
    if not directory:
        return
    line = json.dumps({"service": service, "operation": operation, "errors": errors})
    with open(os.path.join(directory, REJECTIONS_FILE), "a", encoding="utf-8") as log:
        log.write(line + "\n")


def install():
    def _dispatch(self, request, full_url, headers):
        self.setup_class(request, full_url, headers)
        target = self.headers.get("x-amz-target") or self.headers.get("X-Amz-Target")
        found = problems(target, self.body) if target else None
        if found is None or not found[2]:
            return self.call_action()
        service, operation, errors = found
        _record(service, operation, errors)
        count = len(errors)
        message = f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(errors)
        json_version = "1.0" if service == "dynamodb" else "1.1"
        body = json.dumps({"__type": "ValidationException", "message": message})
        return 400, {"Content-Type": f"application/x-amz-json-{json_version}"}, body

    # moto's own `_dispatch` is these two calls, with the check between.
    BaseResponse._dispatch = _dispatch
