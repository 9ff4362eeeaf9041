"""One streamed Responses flow with the official OpenAI npm package (node/stream.test.mjs,
installed by scripts/test-openai with `npm ci`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from conftest import MODEL

SCRIPT = [
    {"reply": {"text": "Counting.", "tool_calls": [
        {"code": "for n in range(1, 4):\n    print(n)\nopen('count.txt', 'w').write('1 2 3')"}]}},
    {"reply": {"text": "Saved in count.txt."}},
]

NODE_DIR = Path(__file__).with_name("node")


def test_the_npm_sdk_reads_a_streamed_response(server):
    node = shutil.which("node")
    assert node, "node is missing: the npm SDK's test cannot run (Debian: apt-get install nodejs npm)"
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), \
        "the openai npm package is not installed: run `npm ci` in tests/openai/node (scripts/test-openai does)"
    done = subprocess.run(
        [node, "stream.test.mjs"], cwd=NODE_DIR, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, SANDCELL_OPENAI_URL=server.base_url,
                 SANDCELL_OPENAI_KEY=server.keys[0], SANDCELL_OPENAI_MODEL=MODEL),
    )
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    assert "events, the answer: Saved in count.txt." in done.stdout
