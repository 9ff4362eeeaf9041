"""Responses with the code_interpreter tool, the model played by the replay server.

The tests of this module run in order, each taking the next steps of SCRIPT."""

from __future__ import annotations

import base64
import json
import urllib.request

import openai
import pytest

from conftest import MODEL
from harness import validate, validated

SCRIPT = [
    # test_a_response_runs_code_and_cites_the_file_it_made
    {"reply": {"text": "Let me compute it.", "tool_calls": [
        {"code": "x = 6 * 7\nprint(x)\nopen('answer.txt', 'w').write(str(x))"}]}},
    {"reply": {"text": "The answer is 42; it is saved in answer.txt."}},
    # test_a_chained_response_keeps_the_variables_and_the_history
    {"reply": {"tool_calls": [{"code": "print(x + 1)"}]}},
    {"reply": {"text": "Now it is 43."}},
    # test_a_plot_comes_back_as_an_image_output
    {"reply": {"tool_calls": [{"code": "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"}]}},
    {"reply": {"text": "Here is the line."}},
    # test_a_streamed_response_follows_openais_events
    {"reply": {"text": "Let me write it.", "tool_calls": [
        {"code": "print('writing')\nopen('streamed.txt', 'w').write('streamed')"}]}},
    {"reply": {"text": "Done: streamed.txt has it."}},
    # test_a_response_not_stored_cannot_be_read_again
    {"reply": {"text": "Not kept."}},
]

# The events of a response that says something, runs code, then answers citing a file.
STREAMED_ORDER = [
    "response.created", "response.in_progress",
    "response.output_item.added", "response.content_part.added", "response.output_text.delta",
    "response.output_text.done", "response.content_part.done", "response.output_item.done",
    "response.output_item.added", "response.code_interpreter_call.in_progress",
    "response.code_interpreter_call_code.delta", "response.code_interpreter_call_code.done",
    "response.code_interpreter_call.interpreting", "response.code_interpreter_call.completed",
    "response.output_item.done",
    "response.output_item.added", "response.content_part.added", "response.output_text.delta",
    "response.output_text.annotation.added", "response.output_text.done",
    "response.content_part.done", "response.output_item.done",
    "response.completed",
]

state: dict = {}


def test_a_response_runs_code_and_cites_the_file_it_made(client):
    container = client.containers.create(name="responses")
    response = client.responses.create(
        model=MODEL,
        input="What is 6 times 7? Save it.",
        tools=[{"type": "code_interpreter", "container": container.id}],
        include=["code_interpreter_call.outputs"],
    )
    assert response.status == "completed" and response.error is None
    assert response.id.startswith("resp_")
    kinds = [item.type for item in response.output]
    assert kinds == ["message", "code_interpreter_call", "message"], kinds
    call = response.output[1]
    assert call.id.startswith("ci_") and call.container_id == container.id
    assert "6 * 7" in call.code
    assert [(o.type, o.logs) for o in call.outputs] == [("logs", "42\n")]
    answer = response.output[2].content[0]
    assert response.output_text.endswith("The answer is 42; it is saved in answer.txt.")
    [citation] = answer.annotations
    assert citation.type == "container_file_citation" and citation.filename == "answer.txt"
    assert answer.text[citation.start_index:citation.end_index] == "answer.txt"
    assert citation.container_id == container.id
    content = client.containers.files.content.retrieve(citation.file_id, container_id=container.id)
    assert content.read() == b"42"
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens

    again = client.responses.retrieve(response.id)
    assert again.output_text == response.output_text
    items = client.responses.input_items.list(response.id)
    assert items.data[0].content[0].text == "What is 6 times 7? Save it."
    state.update(container=container.id, response=response.id)


def test_a_chained_response_keeps_the_variables_and_the_history(client, server):
    response = client.responses.create(
        model=MODEL,
        input="Add one.",
        previous_response_id=state["response"],
        tools=[{"type": "code_interpreter", "container": state["container"]}],
    )
    assert response.status == "completed"
    assert response.previous_response_id == state["response"]
    [call, message] = response.output
    # Without `include`, a call's outputs are null.
    assert call.outputs is None
    assert message.content[0].text == "Now it is 43."
    # The model read the earlier turn, and the variable x was still there.
    requests = json.load(urllib.request.urlopen(f"{server.replay_url}/_requests"))
    latest = json.dumps(requests[-1]["body"])
    assert "The answer is 42" in latest and "43" in latest


def test_a_plot_comes_back_as_an_image_output(client):
    response = client.responses.create(
        model=MODEL,
        input="Plot a line.",
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
        include=["code_interpreter_call.outputs"],
    )
    assert response.status == "completed"
    call = response.output[0]
    assert call.container_id.startswith("cntr_") and call.container_id != state["container"]
    [image] = [o for o in call.outputs if o.type == "image"]
    assert image.url.startswith("data:image/png;base64,")
    assert base64.b64decode(image.url.split(",", 1)[1]).startswith(b"\x89PNG")


def test_a_streamed_response_follows_openais_events(client):
    events = list(client.responses.create(
        model=MODEL,
        input="Write it to a file.",
        tools=[{"type": "code_interpreter", "container": state["container"]}],
        include=["code_interpreter_call.outputs"],
        stream=True,
    ))
    for event in events:
        validate("ResponseStreamEvent", event.to_dict())
    assert [event.sequence_number for event in events] == list(range(len(events)))
    kinds = [event.type for event in events]
    collapsed = [kind for n, kind in enumerate(kinds) if n == 0 or kind != kinds[n - 1]]
    assert collapsed == STREAMED_ORDER, collapsed
    assert kinds.count("response.code_interpreter_call_code.delta") > 1
    completed = events[-1].response
    code = "".join(e.delta for e in events if e.type == "response.code_interpreter_call_code.delta")
    assert code == completed.output[1].code
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta" and e.output_index == 2)
    assert text == completed.output[2].content[0].text == "Done: streamed.txt has it."
    # The ids and indices the events gave are those of the finished response.
    added = [e for e in events if e.type == "response.output_item.added"]
    assert [(e.output_index, e.item.id) for e in added] == [(n, item.id) for n, item in enumerate(completed.output)]
    [annotation] = [e.annotation for e in events if e.type == "response.output_text.annotation.added"]
    assert annotation.filename == "streamed.txt"
    assert completed.output[1].outputs[0].logs == "writing\n"
    assert client.responses.retrieve(completed.id).output_text == completed.output_text


def test_responses_are_the_callers_own(server):
    alice, bob = server.client(0), server.client(1)
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(state["response"])
    with pytest.raises(openai.NotFoundError):
        bob.responses.create(
            model=MODEL, input="x", previous_response_id=state["response"],
            tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
        )
    with pytest.raises(openai.NotFoundError):
        bob.responses.create(model=MODEL, input="x", tools=[{"type": "code_interpreter", "container": state["container"]}])
    alice.responses.delete(state["response"])
    with pytest.raises(openai.NotFoundError):
        alice.responses.retrieve(state["response"])


def test_requests_the_server_cannot_serve_are_bad_requests(client):
    with pytest.raises(openai.BadRequestError) as no_tool:
        client.responses.create(model=MODEL, input="hi")
    assert "code_interpreter" in no_tool.value.message
    with pytest.raises(openai.BadRequestError) as other_tool:
        client.responses.create(model=MODEL, input="hi", tools=[{"type": "web_search"}])
    assert other_tool.value.body["param"] == "tools"
    with pytest.raises(openai.BadRequestError) as bad_model:
        client.responses.create(model="nowhere:model", input="hi",
                                tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])
    assert bad_model.value.message.endswith(".")


def test_a_response_not_stored_cannot_be_read_again(client):
    response = client.responses.create(
        model=MODEL, input="Say something.", store=False, metadata={"run": "7"},
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
    )
    assert response.output_text == "Not kept."
    assert (response.store, response.metadata) == (False, {"run": "7"})
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_every_kind_of_answer_was_validated():
    for schema in ("Response", "ResponseItemList", "ErrorResponse"):
        assert validated.get(schema, 0) > 0, f"no {schema} was validated"
