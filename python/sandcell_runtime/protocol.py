"""Frames on the session socket: a 4-byte big-endian length, then that many bytes of
UTF-8 JSON. The Rust side (`sandcell-session`, `protocol.rs`) speaks the same format."""

import json
import struct
import threading

_HEADER = struct.Struct(">I")


class Channel:
    """A framed, thread-safe JSON channel over a connected stream socket."""

    def __init__(self, sock):
        self._sock = sock
        self._send_lock = threading.Lock()

    def send(self, message):
        body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")
        with self._send_lock:
            self._sock.sendall(_HEADER.pack(len(body)) + body)

    def recv(self):
        """The next message, or None when the peer closed the socket."""
        header = self._recv_exactly(_HEADER.size)
        if header is None:
            return None
        (length,) = _HEADER.unpack(header)
        body = self._recv_exactly(length)
        if body is None:
            return None
        return json.loads(body.decode("utf-8"))

    def _recv_exactly(self, n):
        chunks = []
        while n:
            chunk = self._sock.recv(min(n, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)
