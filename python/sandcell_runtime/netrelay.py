"""The session's way out, when its network policy has an allowlist: a listener on the
session's own loopback (its network namespace has no route out) that relays each
connection to the host's proxy through the Unix socket the host put into the sandbox.
HTTP_PROXY and HTTPS_PROXY name the listener; the host's proxy decides what is allowed,
so nothing here is a check: code that connects to the Unix socket itself meets the same
rules."""

import os
import socket
import threading
import time

_CHUNK = 64 * 1024


def start():
    """Listen on 127.0.0.1 at each port named in SANDCELL_PROXY_PORTS ("port=socket,…"), if any."""
    spec = os.environ.get("SANDCELL_PROXY_PORTS", "")
    for item in filter(None, spec.split(",")):
        port, path = item.split("=", 1)
        listener = socket.create_server(("127.0.0.1", int(port)))
        threading.Thread(target=_accept, args=(listener, path), name=f"sandcell-proxy-{port}", daemon=True).start()


def _accept(listener, path):
    while True:
        try:
            client, _ = listener.accept()
            threading.Thread(target=_relay, args=(client, path), daemon=True).start()
        except (OSError, RuntimeError):  # out of descriptors or threads: the cell's to free
            time.sleep(0.1)


def _relay(client, path):
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
    back.start()
    _copy(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _copy(source, target):
    """Copy until the source ends, then half-close the target so the other side sees the end."""
    try:
        while data := source.recv(_CHUNK):
            target.sendall(data)
    except OSError:
        pass
    try:
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass
