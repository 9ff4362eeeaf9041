"""What a request asks of the model reaches it (temperature, top_p, the output token
limit), and what the model answers is told as OpenAI tells it: a response cut at
max_output_tokens is incomplete, a model that cannot call tools is a bad request. Also: a
response can be read while under way, and an image sent inline goes to the model and
lands in /mnt/data.

The tests of this module run in order, each taking the next steps of SCRIPT."""

from __future__ import annotations

import base64
import json
import time
import urllib.request

import openai
import pytest

from conftest import MODEL
from harness import validate

# An Anthropic stream cut by the model's output token limit (`stop_reason` max_tokens).
CUT_SHORT = "".join(
    f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
    for event in [
        {"type": "message_start", "message": {
            "id": "msg_cut", "type": "message", "role": "assistant", "model": "claude-replay",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "The answer begins"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
         "usage": {"output_tokens": 5}},
        {"type": "message_stop"},
    ]
)

# What Ollama answers a tools request for a model without tool calling, in Anthropic's shape.
NO_TOOLS = {"status": 400, "body": {"type": "error", "error": {
    "type": "invalid_request_error", "message": "claude-replay does not support tools"}}}

# The smallest PNG: one transparent pixel.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)

SCRIPT = [
    # test_sampling_settings_reach_the_model
    {"reply": {"text": "Sampled."}},
    # test_chat_sampling_settings_reach_the_model
    {"reply": {"text": "Chatted."}},
    {"reply": {"text": "Chatted again."}},
    # test_a_response_cut_at_max_output_tokens_is_incomplete
    {"body": CUT_SHORT, "headers": {"content-type": "text/event-stream"}},
    # test_a_model_that_cannot_call_tools_is_a_bad_request
    NO_TOOLS, NO_TOOLS, NO_TOOLS,
    # test_a_streamed_response_can_be_read_while_under_way
    {"reply": {"text": "Slowly, word by word, to the end.", "chunk_size": 4}, "chunk_delay_ms": 150},
    # test_a_stream_the_client_cuts_still_finishes_and_is_kept
    {"reply": {"tool_calls": [{"code": "kept = 'yes'\nprint(kept)"}]}, "chunk_delay_ms": 100},
    {"reply": {"text": "Finished without you."}},
    # test_the_output_token_limit_is_for_the_whole_response
    {"reply": {"tool_calls": [{"code": "print(1)"}]}},
    {"reply": {"text": "Done."}},
    # test_an_image_sent_as_a_data_url_goes_to_the_model_and_lands_in_mnt_data
    {"reply": {"tool_calls": [{"code": "import os\nprint(sorted(os.listdir('/mnt/data')))"}]}},
    {"reply": {"text": "I see it."}},
    # test_a_chat_image_goes_to_the_model_and_lands_in_mnt_data
    {"reply": {"tool_calls": [{"code": "import os\nprint(sorted(os.listdir('/mnt/data')))"}]}},
    {"reply": {"text": "A pixel."}},
]

TOOLS = [{"type": "code_interpreter", "container": {"type": "auto"}}]


def last_model_request(server) -> dict:
    requests = json.load(urllib.request.urlopen(f"{server.replay_url}/_requests"))
    return requests[-1]["body"]


def test_sampling_settings_reach_the_model(client, server):
    response = client.responses.create(
        model=MODEL, input="Say something.", tools=TOOLS,
        temperature=0.3, top_p=0.8, max_output_tokens=500,
    )
    assert response.status == "completed"
    assert (response.temperature, response.top_p, response.max_output_tokens) == (0.3, 0.8, 500)
    sent = last_model_request(server)
    # Anthropic's names: the output limit is `max_tokens`.
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.3, 0.8, 500)


def test_settings_out_of_range_are_refused_before_the_model_is_asked(client, server):
    before = len(json.load(urllib.request.urlopen(f"{server.replay_url}/_requests")))
    for asked, param in [({"temperature": 2.5}, "temperature"), ({"top_p": 1.5}, "top_p"),
                         ({"max_output_tokens": 0}, "max_output_tokens")]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model=MODEL, input="Hi.", tools=TOOLS, **asked)
        assert refused.value.body["param"] == param, refused.value.body
    after = len(json.load(urllib.request.urlopen(f"{server.replay_url}/_requests")))
    assert after == before


def test_chat_sampling_settings_reach_the_model(client, server):
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello."}],
        temperature=0.4, top_p=0.7, max_completion_tokens=300,
    )
    assert completion.choices[0].message.content.endswith("Chatted.")
    sent = last_model_request(server)
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.4, 0.7, 300)
    # The older name of the limit works too.
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello again."}], max_tokens=200,
    )
    sent = last_model_request(server)
    assert sent["max_tokens"] == 200 and "temperature" not in sent and "top_p" not in sent


def test_a_response_cut_at_max_output_tokens_is_incomplete(client, server):
    response = client.responses.create(
        model=MODEL, input="Write a long essay.", tools=TOOLS, max_output_tokens=5,
    )
    assert last_model_request(server)["max_tokens"] == 5
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "The answer begins"


def test_a_model_that_cannot_call_tools_is_a_bad_request(client):
    containers_before = [c.id for c in client.containers.list(limit=100)]
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, input="Compute.", tools=TOOLS)
    message = refused.value.body["message"]
    assert "cannot call tools" in message and "does not support tools" in message, message
    assert refused.value.body["type"] == "invalid_request_error"
    # Streamed, the refusal comes before any event, as the same error.
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input="Compute.", tools=TOOLS, stream=True)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Compute."}])
    assert "cannot call tools" in refused.value.body["message"]
    # The containers made for the refused requests are gone with them.
    assert [c.id for c in client.containers.list(limit=100)] == containers_before


def test_a_streamed_response_can_be_read_while_under_way(client, server):
    stream = client.responses.create(model=MODEL, input="Take your time.", tools=TOOLS, stream=True)
    seen_under_way = []
    events = []
    for event in stream:
        events.append(event)
        if event.type == "response.output_text.delta" and not seen_under_way:
            # The SDK's own client reads it back in the middle of the stream.
            seen_under_way.append(server.client(0).responses.retrieve(events[0].response.id))
    response_id = events[0].response.id
    assert seen_under_way, "no text delta arrived"
    assert seen_under_way[0].id == response_id
    assert seen_under_way[0].status == "in_progress"
    assert events[-1].type == "response.completed"
    done = client.responses.retrieve(response_id)
    assert done.status == "completed" and done.output_text == "Slowly, word by word, to the end."
    # Another key cannot read it, under way or not.
    with pytest.raises(openai.NotFoundError):
        server.client(1).responses.retrieve(response_id)


def test_a_stream_the_client_cuts_still_finishes_and_is_kept(client):
    stream = client.responses.create(model=MODEL, input="Go on without me.", tools=TOOLS, stream=True)
    created = next(iter(stream))
    assert created.type == "response.created"
    stream.close()  # the client goes away
    response_id = created.response.id
    for _ in range(100):
        response = client.responses.retrieve(response_id)
        if response.status != "in_progress":
            break
        time.sleep(0.1)
    assert response.status == "completed", response.status
    assert response.output_text == "Finished without you."
    assert response.output[0].type == "code_interpreter_call"


def test_the_output_token_limit_is_for_the_whole_response(client, server):
    response = client.responses.create(
        model=MODEL, input="Print one.", tools=TOOLS, max_output_tokens=100,
    )
    assert response.status == "completed"
    requests = json.load(urllib.request.urlopen(f"{server.replay_url}/_requests"))
    first, second = requests[-2]["body"], requests[-1]["body"]
    # The replay server counts a reply's output tokens as its characters / 4 + 1: the
    # call's arguments, {"code":"print(1)"}, are 5.
    first_output = len(json.dumps({"code": "print(1)"}, separators=(",", ":"))) // 4 + 1
    assert (first["max_tokens"], second["max_tokens"]) == (100, 100 - first_output)


def test_an_image_sent_as_a_data_url_goes_to_the_model_and_lands_in_mnt_data(client, server):
    url = "data:image/png;base64," + base64.b64encode(PIXEL).decode()
    response = client.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": [
            {"type": "input_text", "text": "What is in the picture?"},
            {"type": "input_image", "image_url": url, "detail": "auto"},
        ]}],
        tools=TOOLS,
        include=["code_interpreter_call.outputs"],
    )
    assert response.status == "completed"
    requests = json.load(urllib.request.urlopen(f"{server.replay_url}/_requests"))
    first = requests[-2]["body"]
    [user] = [m for m in first["messages"] if m["role"] == "user"]
    assert user["content"][0] == {"type": "text", "text": "What is in the picture?"}
    assert user["content"][1] == {"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": base64.b64encode(PIXEL).decode()}}
    call = response.output[0]
    assert call.outputs[0].logs == "['image_1.png']\n"
    files = client.containers.files.list(call.container_id)
    [image] = [f for f in files.data if f.path == "/mnt/data/image_1.png"]
    content = client.containers.files.content.retrieve(image.id, container_id=call.container_id)
    assert content.read() == PIXEL


def test_an_image_by_http_url_is_refused_and_nothing_is_fetched(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model=MODEL,
            input=[{"role": "user", "content": [
                {"type": "input_image", "image_url": "http://169.254.169.254/latest/meta-data", "detail": "auto"},
            ]}],
            tools=TOOLS,
        )
    assert "does not fetch URLs" in refused.value.body["message"]
    assert refused.value.body["param"] == "input"
    validate("ErrorResponse", {"error": refused.value.body})
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model=MODEL,
            input=[{"role": "user", "content": [
                {"type": "input_image", "image_url": "data:image/svg+xml;base64,PHN2Zy8+", "detail": "auto"},
            ]}],
            tools=TOOLS,
        )
    assert "PNG, JPEG, GIF or WebP" in refused.value.body["message"]


def test_a_chat_image_goes_to_the_model_and_lands_in_mnt_data(client, server):
    data = base64.b64encode(PIXEL).decode()
    completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "text", "text": "And this one?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
    ]}])
    answer = completion.choices[0].message.content
    assert "['image_2.png']" in answer and answer.endswith("A pixel.")
    requests = json.load(urllib.request.urlopen(f"{server.replay_url}/_requests"))
    [user] = [m for m in requests[-2]["body"]["messages"] if m["role"] == "user"]
    assert user["content"][1] == {"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": data}}
