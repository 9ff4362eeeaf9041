"""Writes openai-schemas.json: the component schemas of OpenAI's published OpenAPI
document that the tests validate sandcell's answers against, and every schema they refer
to, with descriptions and examples left out (validation does not read them).

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

    for root in ROOTS:
        kept.add(root)
        walk(schemas[root])
    extract = {
        "info": {"source": "openai/openai-openapi", "version": document["info"]["version"], "license": "MIT"},
        "components": {"schemas": {name: strip(schemas[name]) for name in sorted(kept)}},
    }
    target = Path(__file__).with_name("openai-schemas.json")
    target.write_text(json.dumps(extract, indent=1, sort_keys=True) + "\n")
    print(f"{len(kept)} schemas written to {target}")


if __name__ == "__main__":
    main(sys.argv[1])
