"""Chat Completions: the model runs sandcell's interpreter loop behind the scenes and the
answer carries the code and its result as Markdown. The tests run in order, each taking
the next steps of SCRIPT."""

from __future__ import annotations

import base64

from conftest import MODEL
from harness import validate, validated

SCRIPT = [
    # test_an_answer_carries_the_code_and_its_result
    {"reply": {"tool_calls": [{"code": "y = 21 * 2\nprint(y)"}]}},
    {"reply": {"text": "y is 42."}},
    # test_a_chat_that_repeats_its_history_keeps_its_container
    {"reply": {"tool_calls": [{"code": "print(y + 1)"}]}},
    {"reply": {"text": "Now 43."}},
    # test_a_streamed_answer_arrives_in_chunks
    {"reply": {"text": "Computing.", "tool_calls": [{"code": "print(2 ** 10)"}]}},
    {"reply": {"text": "It is 1024."}},
    # test_an_attached_file_lands_in_mnt_data
    {"reply": {"tool_calls": [{"code": "print(open('/mnt/data/notes.txt').read())"}]}},
    {"reply": {"text": "Read it."}},
]

history: list[dict] = []


def test_an_answer_carries_the_code_and_its_result(client):
    history.append({"role": "user", "content": "What is 21 times 2?"})
    completion = client.chat.completions.create(model=MODEL, messages=history)
    answer = completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert "```python\ny = 21 * 2\nprint(y)\n```" in answer
    assert "```\n42\n```" in answer
    assert answer.endswith("y is 42.")
    history.append({"role": "assistant", "content": answer})


def test_a_chat_that_repeats_its_history_keeps_its_container(client):
    history.append({"role": "user", "content": "Add one."})
    completion = client.chat.completions.create(model=MODEL, messages=history)
    answer = completion.choices[0].message.content
    # y was still defined: the same session ran this code.
    assert "```\n43\n```" in answer, answer


def test_a_streamed_answer_arrives_in_chunks(client):
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "2 to the 10th?"}], stream=True,
    ))
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk.to_dict())
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len(chunks) > 5
    answer = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert answer.startswith("Computing.")
    assert "```python\nprint(2 ** 10)\n```" in answer and "```\n1024\n```" in answer
    assert answer.endswith("It is 1024.")


def test_an_attached_file_lands_in_mnt_data(client):
    data = base64.b64encode(b"remember the milk").decode()
    completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Read my notes."},
        {"type": "file", "file": {"filename": "notes.txt", "file_data": f"data:text/plain;base64,{data}"}},
    ]}])
    assert "```\nremember the milk\n```" in completion.choices[0].message.content


def test_every_kind_of_answer_was_validated():
    for schema in ("CreateChatCompletionResponse", "CreateChatCompletionStreamResponse"):
        assert validated.get(schema, 0) > 0, f"no {schema} was validated"
