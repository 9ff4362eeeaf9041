"""A user's session quota is OpenAI's rate limit: the SDK raises RateLimitError."""

from __future__ import annotations

import threading
import time

import openai
import pytest

from conftest import MODEL

# One live session per user; the model takes its time, so the response keeps its
# container's session busy.
SERVE_ARGS = ["--max-sessions-per-user", "1"]
SCRIPT = [{"reply": {"text": "Done, slowly."}, "delay_ms": 4000}]


def test_a_full_quota_is_a_rate_limit_error(client):
    container = client.containers.create(name="busy")
    answered = []
    running = threading.Thread(target=lambda: answered.append(client.responses.create(
        model=MODEL, input="Take your time.", tools=[{"type": "code_interpreter", "container": container.id}],
    )))
    running.start()
    time.sleep(1.5)
    with pytest.raises(openai.RateLimitError) as refused:
        client.containers.create(name="one too many")
    assert refused.value.body["code"] == "rate_limit_exceeded"
    assert int(refused.value.response.headers["retry-after"]) > 0
    running.join(timeout=60)
    assert answered and answered[0].output_text == "Done, slowly."
