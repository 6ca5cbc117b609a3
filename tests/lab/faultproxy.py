"""A small TCP fault proxy for the lab: latency, sliced writes and cut connections on demand.

It sits between netmiko and the lab's sshd (client -> proxy -> sshd) and never looks inside
the stream (SSH is encrypted anyway): it only changes *when* and *how* bytes arrive, which is
what a congested management network, a middlebox that fragments and a flapping uplink do.

    proxy = FaultProxy(("198.19.211.2", 2211)).start()
    proxy.latency_s = 0.1      # every chunk waits 100 ms, both directions
    proxy.slice_bytes = 7      # and is written 7 bytes at a time
    proxy.cut()                # reset every open connection now (mid-command if one is running)

Everything runs in threads of the calling process; `stop()` closes the listener and every
connection and joins the threads.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket
    threads: list[threading.Thread] = field(default_factory=list)


class FaultProxy:
    """Forwards TCP connections from `listen` to `target`, with faults set by attribute."""

    def __init__(self, target: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.target = target
        self.latency_s = 0.0  # added before each forwarded chunk, in both directions
        self.slice_bytes = 0  # >0: write each chunk in slices of this many bytes
        self.slice_gap_s = 0.002  # pause between slices
        self.connections = 0  # accepted so far
        self._listener = socket.create_server(listen)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)

    @property
    def port(self) -> int:
        return self.address[1]

    def start(self) -> FaultProxy:
        self._acceptor.start()
        return self

    def reset(self) -> None:
        """No faults: plain forwarding again."""
        self.latency_s = 0.0
        self.slice_bytes = 0

    def cut(self) -> int:
        """Reset every open connection at once (RST, no FIN); returns how many were open."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in (pair.client, pair.upstream):
                _abort(s)
        return len(pairs)

    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def stop(self) -> None:
        self._closed.set()
        self._listener.close()
        self.cut()
        self._acceptor.join(timeout=5)
        with self._lock:
            threads = [t for p in self._pairs for t in p.threads]
        for t in threads:
            t.join(timeout=5)

    # ------------------------------------------------------------------ internals

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed by stop()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _abort(client)
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, upstream)
            pair.threads = [
                threading.Thread(target=self._pump, args=(client, upstream), daemon=True),
                threading.Thread(target=self._pump, args=(upstream, client), daemon=True),
            ]
            with self._lock:
                self.connections += 1
                self._pairs.append(pair)
            for t in pair.threads:
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                if self.latency_s:
                    time.sleep(self.latency_s)
                step = self.slice_bytes or len(chunk)
                for i in range(0, len(chunk), step):
                    dst.sendall(chunk[i : i + step])
                    if self.slice_bytes and i + step < len(chunk):
                        time.sleep(self.slice_gap_s)
        except OSError:
            pass  # cut() or the far end reset it: the other pump sees the same and stops
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._forget(src)

    def _forget(self, s: socket.socket) -> None:
        with self._lock:
            keep = []
            for pair in self._pairs:
                if s in (pair.client, pair.upstream):
                    # Half-closed in one direction is still open; drop the pair once both are done.
                    if all(not t.is_alive() or t is threading.current_thread() for t in pair.threads):
                        for x in (pair.client, pair.upstream):
                            x.close()
                        continue
                keep.append(pair)
            self._pairs = keep


def _abort(s: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, as when a link or a middlebox drops a flow."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # SHUT_RD sends nothing but wakes the pump thread blocked in recv() on this socket;
        # close() with linger 0 then sends the RST.
        s.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
