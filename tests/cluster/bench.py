"""What several nodes cost: sandcell's multi-node mode measured on this machine.

With one node, then with three sharing one PostgreSQL database and one SeaweedFS bucket
(started as check.py starts them): sessions made per second (SESSIONS of them, one after
another, through the nodes in turn), and a trivial execution (`1+1`) sent straight to the
node running its session and through another node that forwards it, call for call in
turn: p50, p90 and executions per second (one after another), over CALLS calls each
after a warm-up, each client on one kept-alive connection. Prints a Markdown table and
what forwarding adds at p50.

Usage: bench.py WORK_DIR (a scratch directory). Environment: as check.py's, without the
replay server.
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import check
from check import NoAnswer, Node, SeaweedFS, clean_up, database_url, fail, node_environment

SESSIONS = 30
CALLS = 300
WARM_UP = 20
# Room for every session made while measuring, beside the measured one.
SERVE_ARGS = ("--max-sessions-per-user", str(SESSIONS + 10), "--max-sessions", str(SESSIONS + 10))


@dataclass
class Latency:
    p50_ms: float
    p90_ms: float
    per_second: float


class KeptAlive:
    """One client connection to a node, kept open across calls."""

    def __init__(self, node: Node):
        self.node = node
        self.connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=120)

    def execute(self, session: str) -> str | None:
        """Runs `1+1`, failing unless it gives 2; returns the node that ran it."""
        try:
            self.connection.request("POST", f"/api/v1/sessions/{session}/execute",
                                    json.dumps({"code": "1+1"}),
                                    {"Content-Type": "application/json"})
            response = self.connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise NoAnswer(f"{self.node.name} did not answer an execution: "
                           f"{type(error).__name__}: {error}") from None
        if response.status != 200:
            fail(f"an execution through {self.node.name} answered {response.status}: {body[:300]!r}")
        result = json.loads(body)
        if result["status"] != "ok" or not any(
                bundle.get("text/plain") == "2" for bundle in result["results"]):
            fail(f"`1+1` through {self.node.name} did not give 2: {result}")
        return response.getheader("Sandcell-Node")


def executions(through: list[Node], session: str, owner: Node) -> list[Latency]:
    """CALLS executions of `1+1` in `owner`'s session through each node of `through`,
    after WARM_UP each; the nodes take turns call by call, so that each sees the machine
    as busy as the others do."""
    clients = [KeptAlive(node) for node in through]
    for _ in range(WARM_UP):
        for client in clients:
            client.execute(session)
    samples: list[list[float]] = [[] for _ in clients]
    for _ in range(CALLS):
        for client, taken in zip(clients, samples):
            started = time.perf_counter()
            ran_on = client.execute(session)
            taken.append(time.perf_counter() - started)
            if ran_on != owner.url:
                fail(f"an execution through {client.node.name} ran on {ran_on!r}, "
                     f"not on {owner.url}")
    for client in clients:
        client.connection.close()
    return [latency(taken) for taken in samples]


def latency(samples: list[float]) -> Latency:
    cuts = statistics.quantiles(samples, n=100)
    return Latency(cuts[49] * 1000, cuts[89] * 1000, len(samples) / sum(samples))


def sessions_per_second(nodes: list[Node]) -> float:
    """Makes SESSIONS sessions one after another, through each node in turn; deletes them
    afterwards (not timed)."""
    made = []
    began = time.perf_counter()
    for n in range(SESSIONS):
        node = nodes[n % len(nodes)]
        reply = node.api("POST", "/sessions", {})
        if reply.status != 201:
            fail(f"making a session through {node.name} answered {reply}")
        made.append((node, reply.json["id"]))
    rate = SESSIONS / (time.perf_counter() - began)
    for node, session in made:
        reply = node.api("DELETE", f"/sessions/{session}")
        if reply.status != 204:
            fail(f"deleting session {session} through {node.name} answered {reply}")
    return rate


def measure(work: Path, count: int, database: str, environment: dict[str, str]) -> dict:
    print(f"{check.PROGRAM}: {count} node(s)", file=sys.stderr)
    nodes = [Node(f"{count}n-node{n}", work / f"{count}-nodes" / f"node{n}", database,
                  environment, SERVE_ARGS) for n in range(1, count + 1)]
    row = {"nodes": count, "sessions": sessions_per_second(nodes)}
    owner = nodes[0]
    made = owner.api("POST", "/sessions", {})
    if made.status != 201 or made.json.get("node") != owner.url:
        fail(f"a session made through {owner.name} should run there: {made}")
    session = made.json["id"]
    # The owner itself, and another node that forwards to it.
    measured = executions(nodes[:2], session, owner)
    row["direct"] = measured[0]
    row["forwarded"] = measured[1] if count > 1 else None
    owner.api("DELETE", f"/sessions/{session}")
    for node in nodes:
        code = node.stop()
        if code != 0:
            fail(f"{node.name} exited with {code} on SIGTERM")
    return row


def table(rows: list[dict]) -> str:
    lines = [
        f"| nodes | sessions made/s (N={SESSIONS}) | `1+1` on the owner p50 / p90 ms | cells/s "
        f"| `1+1` through a forwarding node p50 / p90 ms | cells/s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        direct, forwarded = row["direct"], row["forwarded"]
        through = (f"{forwarded.p50_ms:.2f} / {forwarded.p90_ms:.2f} | {forwarded.per_second:.0f}"
                   if forwarded else "– | –")
        lines.append(f"| {row['nodes']} | {row['sessions']:.1f} | {direct.p50_ms:.2f} / "
                     f"{direct.p90_ms:.2f} | {direct.per_second:.0f} | {through} |")
    return "\n".join(lines)


def main() -> None:
    check.PROGRAM = "bench-cluster"
    work = Path(sys.argv[1])
    weed = SeaweedFS(work, fail)
    try:
        database = database_url()
        environment = node_environment(work, weed.endpoint)
        rows = [measure(work, count, database, environment) for count in (1, 3)]
    except NoAnswer as error:
        fail(str(error))
    finally:
        clean_up(work)
        weed.stop()
    print(f"\n`1+1` over {CALLS} calls each after {WARM_UP} to warm up, one call at a time; "
          f"cells/s is one client's, calls back to back.\n")
    print(table(rows))
    three = rows[-1]
    overhead = three["forwarded"].p50_ms - three["direct"].p50_ms
    print(f"\nForwarding adds {overhead:.2f} ms at p50 "
          f"({three['forwarded'].p50_ms:.2f} ms through another node, "
          f"{three['direct'].p50_ms:.2f} ms on the owner).")


if __name__ == "__main__":
    main()
