"""The paced SPAN sender of bench/capture.py: frames at a steady rate, in a process of its own.

trafgen's rate limit (-b) is not a steady rate: it sends each second's quota at full speed and
then waits for the next second (at 300k frames/s asked it delivered ~500k/s for 0.6 s, then
nothing for 0.4 s), so a capture behind it sees bursts, not the rate asked. tcpreplay paces
evenly but sends a frame per call (228k frames/s at most on a 2-core machine here). This
sender paces evenly in 1 ms steps and sends through sendmmsg(2), 64 frames a call, from one
thread per CPU sharing one schedule: frame k is due at start + k / rate, and a thread sends
the next 64 when they are due. Run it in the idle scheduling class (chrt --idle 0) and it
only uses CPU time that the capture does not want; the capture counts what was offered.

usage: _span_sender.py IFNAME FRAMES.pkl RATE SECONDS [THREADS]
Prints one JSON line at the end: {"sent", "errors", "elapsed_s"}.
"""

from __future__ import annotations

import ctypes
import json
import os
import pickle
import socket
import sys
import threading
import time

BATCH = 64
STEP_S = 0.001


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(_IoVec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


def main(argv: list[str]) -> int:
    ifname, path, rate, seconds = argv[0], argv[1], int(argv[2]), float(argv[3])
    threads = int(argv[4]) if len(argv) > 4 else (os.cpu_count() or 1)
    frames: list[bytes] = pickle.loads(open(path, "rb").read())  # noqa: SIM115 - bench helper
    libc = ctypes.CDLL(None, use_errno=True)
    sendmmsg = libc.sendmmsg
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    # One message per frame, then the first BATCH again, so any BATCH in a row is contiguous.
    n = len(frames)
    bufs = [ctypes.create_string_buffer(f, len(f)) for f in frames]
    iovs = (_IoVec * n)(*[_IoVec(ctypes.addressof(b), len(b.raw)) for b in bufs])
    msgs = (_MMsgHdr * (n + BATCH))()
    for i in range(n + BATCH):
        m = msgs[i].hdr
        m.iov = ctypes.pointer(iovs[i % n])
        m.iovlen = 1
    base = ctypes.addressof(msgs)
    size = ctypes.sizeof(_MMsgHdr)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((ifname, 0))
    fd = sock.fileno()
    lock = threading.Lock()
    state = {"next": 0, "sent": 0, "errors": 0}
    start = time.monotonic()
    end = start + seconds

    def run() -> None:
        while True:
            now = time.monotonic()
            if now >= end:
                return
            due = int((now - start) * rate)
            with lock:
                k = state["next"]
                if k + BATCH <= due:
                    state["next"] = k + BATCH
            if k + BATCH > due:
                time.sleep(STEP_S)
                continue
            got = sendmmsg(fd, base + (k % n) * size, BATCH, 0)
            with lock:
                if got < 0:
                    state["errors"] += BATCH
                else:
                    state["sent"] += got
                    state["errors"] += BATCH - got

    ts = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    sock.close()
    print(json.dumps({"sent": state["sent"], "errors": state["errors"],
                      "elapsed_s": round(time.monotonic() - start, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
