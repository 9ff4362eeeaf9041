"""Checks every answer of sandcell's /v1 against OpenAI's own schemas.

The schemas are openai-v1.openapi.json beside this file: the component schemas of OpenAI's
published OpenAPI document that /v1 answers with, and all they refer to
(extract_schemas.py writes it; MIT licence, LICENSE beside it). Each JSON answer the SDK
receives passes through `check_response` (an httpx event hook), which validates it
against the schema of its route; a JSON answer of a route not in the table fails the
test, so nothing goes unchecked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx2
import jsonschema



def nullable_as_json_schema(value):
    """OpenAI's document keeps OpenAPI 3.0's `nullable: true` in places, which JSON
    Schema does not read: such a schema is made to accept null, as OpenAPI means."""
    if isinstance(value, dict):
        value = {key: nullable_as_json_schema(item) for key, item in value.items()}
        if value.pop("nullable", False) is True:
            if isinstance(value.get("type"), str):
                value["type"] = [value["type"], "null"]
            if isinstance(value.get("enum"), list) and None not in value["enum"]:
                value["enum"] = [*value["enum"], None]
        return value
    if isinstance(value, list):
        return [nullable_as_json_schema(item) for item in value]
    return value


DOCUMENT = nullable_as_json_schema(json.loads(Path(__file__).with_name("openai-v1.openapi.json").read_text()))

# (method, path under /v1) -> the schema of a successful JSON answer; None: not JSON.
ROUTES: list[tuple[str, str, str | None]] = [
    ("GET", r"/models", "ListModelsResponse"),
    ("GET", r"/models/[^/]+", "Model"),
    ("POST", r"/files", "OpenAIFile"),
    ("GET", r"/files", "ListFilesResponse"),
    ("GET", r"/files/[^/]+", "OpenAIFile"),
    ("DELETE", r"/files/[^/]+", "DeleteFileResponse"),
    ("GET", r"/files/[^/]+/content", None),
    ("POST", r"/containers", "ContainerResource"),
    ("GET", r"/containers", "ContainerListResource"),
    ("GET", r"/containers/[^/]+", "ContainerResource"),
    # OpenAI's document gives the deletions no schema; the SDK reads nothing from them.
    ("DELETE", r"/containers/[^/]+", None),
    ("POST", r"/containers/[^/]+/files", "ContainerFileResource"),
    ("GET", r"/containers/[^/]+/files", "ContainerFileListResource"),
    ("GET", r"/containers/[^/]+/files/[^/]+", "ContainerFileResource"),
    ("DELETE", r"/containers/[^/]+/files/[^/]+", None),
    ("GET", r"/containers/[^/]+/files/[^/]+/content", None),
    ("POST", r"/responses", "Response"),
    ("GET", r"/responses/[^/]+", "Response"),
    ("DELETE", r"/responses/[^/]+", None),
    ("GET", r"/responses/[^/]+/input_items", "ResponseItemList"),
    ("POST", r"/chat/completions", "CreateChatCompletionResponse"),
]

validated: dict[str, int] = {}


def validator(name: str) -> jsonschema.protocols.Validator:
    rooted = dict(DOCUMENT, **{"$ref": f"#/components/schemas/{name}"})
    return jsonschema.Draft202012Validator(rooted)


_validators: dict[str, jsonschema.protocols.Validator] = {}


def validate(name: str, instance) -> None:
    if name not in _validators:
        _validators[name] = validator(name)
    _validators[name].validate(instance)
    validated[name] = validated.get(name, 0) + 1


def schema_of(method: str, path: str) -> str | None:
    tail = re.sub(r"^/v1", "", path)
    for route_method, pattern, schema in ROUTES:
        if route_method == method and re.fullmatch(pattern, tail):
            return schema
    raise AssertionError(f"{method} {path} is not in the table of routes to validate")


def check_response(response: httpx2.Response) -> None:
    """Validates one answer of /v1 (an event hook of the SDK's HTTP client)."""
    if not response.request.url.path.startswith("/v1"):
        return
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        return  # stream events are validated one by one where they are read
    if response.status_code >= 400:
        response.read()
        validate("ErrorResponse", response.json())
        return
    schema = schema_of(response.request.method, response.request.url.path)
    if schema is None:
        return
    response.read()
    assert content_type.startswith("application/json"), f"{response.request.url}: {content_type}"
    validate(schema, response.json())


def http_client() -> httpx2.Client:
    return httpx2.Client(event_hooks={"response": [check_response]}, timeout=120)
