"""Models, Files, Containers and Container files through the official OpenAI SDK."""

from __future__ import annotations

import io

import httpx2
import openai
import pytest

from conftest import MODEL
from harness import http_client, validated


def test_models_lists_the_configured_model(client):
    models = client.models.list()
    assert [model.id for model in models.data] == [MODEL]
    assert models.data[0].owned_by == "anthropic"
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("nowhere:model")
    assert "GET /v1/models" in missing.value.message


def test_files_are_uploaded_listed_read_and_deleted(client):
    uploaded = client.files.create(file=("table.csv", b"a,b\n1,2\n"), purpose="user_data")
    assert uploaded.id.startswith("file-")
    assert (uploaded.filename, uploaded.bytes, uploaded.purpose) == ("table.csv", 8, "user_data")
    assert client.files.retrieve(uploaded.id).filename == "table.csv"
    assert uploaded.id in [file.id for file in client.files.list()]
    assert client.files.content(uploaded.id).read() == b"a,b\n1,2\n"
    deleted = client.files.delete(uploaded.id)
    assert deleted.deleted and deleted.id == uploaded.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_a_file_needs_a_known_purpose(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("x.txt", b"x"), purpose="nonsense")
    assert refused.value.body["param"] == "purpose"
    assert refused.value.message.endswith(".")


def test_lists_page_with_after_limit_and_order(client):
    ids = [client.files.create(file=(f"f{n}.txt", b"x"), purpose="assistants").id for n in range(3)]
    newest_first = [file.id for file in client.files.list(limit=100) if file.id in ids]
    assert newest_first == ids[::-1]
    first = client.files.list(limit=1, order="asc")
    assert first.has_more and len(first.data) == 1
    # The SDK's auto-pagination follows `after` to the end.
    assert [file.id for file in client.files.list(limit=1, order="asc") if file.id in ids] == ids
    for file_id in ids:
        client.files.delete(file_id)


def test_a_container_holds_files_uploaded_copied_and_made(client):
    source = client.files.create(file=("data.csv", b"x,y\n1,2\n"), purpose="user_data")
    container = client.containers.create(
        name="analysis", file_ids=[source.id], expires_after={"anchor": "last_active_at", "minutes": 30},
    )
    assert container.id.startswith("cntr_")
    assert (container.name, container.status) == ("analysis", "running")
    assert container.expires_after.minutes == 30
    assert client.containers.retrieve(container.id).name == "analysis"
    assert container.id in [c.id for c in client.containers.list()]

    files = client.containers.files.list(container.id).data
    assert [(f.path, f.source, f.bytes) for f in files] == [("/mnt/data/data.csv", "user", 8)]

    # An upload with a name already taken is numbered; a copy from Files too.
    uploaded = client.containers.files.create(container.id, file=("data.csv", io.BytesIO(b"other")))
    assert uploaded.id.startswith("cfile_") and uploaded.path == "/mnt/data/data_1.csv"
    copied = client.containers.files.create(container.id, file_id=source.id)
    assert copied.path == "/mnt/data/data_2.csv" and copied.source == "user"
    assert client.containers.files.content.retrieve(uploaded.id, container_id=container.id).read() == b"other"
    assert client.containers.files.retrieve(copied.id, container_id=container.id).bytes == 8

    client.containers.files.delete(uploaded.id, container_id=container.id)
    with pytest.raises(openai.NotFoundError):
        client.containers.files.retrieve(uploaded.id, container_id=container.id)
    paths = sorted(f.path for f in client.containers.files.list(container.id))
    assert paths == ["/mnt/data/data.csv", "/mnt/data/data_2.csv"]

    client.containers.delete(container.id)
    with pytest.raises(openai.NotFoundError):
        client.containers.retrieve(container.id)
    client.files.delete(source.id)


def test_container_requests_out_of_range_are_refused(client):
    with pytest.raises(openai.BadRequestError) as memory:
        client.containers.create(name="big", memory_limit="3g")
    assert memory.value.body["param"] == "memory_limit"
    with pytest.raises(openai.BadRequestError) as expiry:
        client.containers.create(name="long", expires_after={"anchor": "last_active_at", "minutes": 0})
    assert "minutes" in expiry.value.message
    with pytest.raises(openai.NotFoundError):
        client.containers.create(name="files", file_ids=["file-missing"])
    with pytest.raises(openai.BadRequestError):
        client.post("/containers", body={"nmae": "typo"}, cast_to=httpx2.Response)


def test_unknown_keys_are_authentication_errors(server):
    stranger = openai.OpenAI(base_url=server.base_url, api_key="sk-unknown", http_client=http_client(), max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        stranger.models.list()
    assert refused.value.body["code"] == "invalid_api_key"


def test_unknown_routes_answer_in_openais_shape(client):
    with pytest.raises(openai.NotFoundError) as missing:
        client.get("/nowhere", cast_to=httpx2.Response)
    assert "/v1/nowhere" in missing.value.message


def test_a_key_sees_only_its_own_objects(server):
    alice, bob = server.client(0), server.client(1)
    file = alice.files.create(file=("secret.txt", b"s"), purpose="user_data")
    container = alice.containers.create(name="private")
    cfile = alice.containers.files.create(container.id, file=("note.txt", b"n"))
    assert file.id not in [f.id for f in bob.files.list()]
    assert container.id not in [c.id for c in bob.containers.list()]
    for attempt in (
        lambda: bob.files.retrieve(file.id),
        lambda: bob.files.content(file.id),
        lambda: bob.files.delete(file.id),
        lambda: bob.containers.retrieve(container.id),
        lambda: bob.containers.delete(container.id),
        lambda: bob.containers.files.list(container.id),
        lambda: bob.containers.files.create(container.id, file_id=file.id),
        lambda: bob.containers.files.retrieve(cfile.id, container_id=container.id),
        lambda: bob.containers.files.content.retrieve(cfile.id, container_id=container.id),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    # Nor can bob copy alice's file into his own container.
    own = bob.containers.create(name="bob's")
    with pytest.raises(openai.NotFoundError):
        bob.containers.files.create(own.id, file_id=file.id)
    assert alice.files.retrieve(file.id).id == file.id


def test_every_kind_of_answer_was_validated():
    # Runs last in this module: the answers above were each checked against OpenAI's schemas.
    for schema in ("ListModelsResponse", "Model", "OpenAIFile", "ListFilesResponse", "DeleteFileResponse",
                   "ContainerResource", "ContainerListResource", "ContainerFileResource",
                   "ContainerFileListResource", "ErrorResponse"):
        assert validated.get(schema, 0) > 0, f"no {schema} was validated"
