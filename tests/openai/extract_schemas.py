"""Writes openai-v1.openapi.json: the part of OpenAI's published OpenAPI document that
sandcell's /v1 serves (those paths and methods, the component schemas the tests validate
sandcell's answers against, and everything they refer to), with descriptions and
examples left out (neither validation nor fuzzing reads them). The tests validate every
answer against its schemas; scripts/schemathesis-openai fuzzes /v1 with it.

Run with the path of OpenAI's document (openapi.json, repository openai/openai-openapi,
MIT licence: LICENSE beside this file):

    python3 extract_schemas.py PATH/TO/openapi.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# The objects and events sandcell's /v1 answers.
ROOTS = [
    "ContainerResource", "ContainerListResource", "ContainerFileResource",
    "ContainerFileListResource", "OpenAIFile", "ListFilesResponse", "DeleteFileResponse",
    "Model", "ListModelsResponse", "ErrorResponse", "Response", "ResponseStreamEvent",
    "ResponseItemList", "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse",
]
# The paths and methods /v1 serves.
PATHS = {
    "/models": ["get"], "/models/{model}": ["get"],
    "/files": ["get", "post"], "/files/{file_id}": ["get", "delete"], "/files/{file_id}/content": ["get"],
    "/containers": ["get", "post"], "/containers/{container_id}": ["get", "delete"],
    "/containers/{container_id}/files": ["get", "post"],
    "/containers/{container_id}/files/{file_id}": ["get", "delete"],
    "/containers/{container_id}/files/{file_id}/content": ["get"],
    "/responses": ["post"], "/responses/{response_id}": ["get", "delete"],
    "/responses/{response_id}/input_items": ["get"],
    "/chat/completions": ["post"],
}
# Keys that carry prose or samples, not constraints.
DROPPED = {"description", "x-oaiMeta", "example", "examples", "title", "x-stainless-const"}
PREFIX = "#/components/schemas/"


def strip(value):
    """A schema without its prose; the names in a `properties` map are kept whatever they are."""
    if isinstance(value, dict):
        return {
            key: ({name: strip(item) for name, item in child.items()} if key == "properties" else strip(child))
            for key, child in value.items()
            if key not in DROPPED
        }
    if isinstance(value, list):
        return [strip(item) for item in value]
    return value


def main(source: str) -> None:
    document = json.loads(Path(source).read_text())
    schemas = document["components"]["schemas"]
    kept: set[str] = set()

    def walk(value) -> None:
        if isinstance(value, dict):
            ref = value.get("$ref")
            if isinstance(ref, str) and ref.startswith(PREFIX) and ref[len(PREFIX):] not in kept:
                kept.add(ref[len(PREFIX):])
                walk(schemas[ref[len(PREFIX):]])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    paths = {path: {method: document["paths"][path][method] for method in methods} for path, methods in PATHS.items()}
    walk(paths)
    for root in ROOTS:
        kept.add(root)
        walk(schemas[root])
    extract = {
        "openapi": document["openapi"],
        "info": {
            "title": "The part of OpenAI's API that sandcell's /v1 serves",
            "version": document["info"]["version"],
            "description": "Extracted from OpenAI's published OpenAPI document (repository openai/openai-openapi) by extract_schemas.py; MIT licence, see LICENSE.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "paths": strip(paths),
        "components": {
            "schemas": {name: strip(schemas[name]) for name in sorted(kept)},
            "responses": strip(document["components"]["responses"]),
            "securitySchemes": strip(document["components"]["securitySchemes"]),
        },
        "security": document.get("security", []),
    }
    target = Path(__file__).with_name("openai-v1.openapi.json")
    target.write_text(json.dumps(extract, indent=1, sort_keys=True) + "\n")
    print(f"{len(paths)} paths and {len(kept)} schemas written to {target}")


if __name__ == "__main__":
    main(sys.argv[1])
