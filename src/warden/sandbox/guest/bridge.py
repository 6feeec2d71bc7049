"""The bridge: relays its stdin/stdout to the supervisor's Unix socket, so a `runsc exec` process
can carry the control protocol into a gVisor sandbox."""

# Standard library only: this file runs inside the sandbox.
from __future__ import annotations

import os
import socket
import sys
import threading

DEFAULT_SOCKET = "/run/warden/control.sock"
CHUNK = 65536


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else os.environ.get("WARDEN_SOCKET", DEFAULT_SOCKET)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        print(f"bridge: cannot connect to {path}: {exc}", file=sys.stderr)
        return 1
    finished = threading.Event()

    def host_to_guest() -> None:
        try:
            while data := os.read(0, CHUNK):
                sock.sendall(data)
            # The host is done sending: let the supervisor finish what is in flight, then it
            # closes its side and guest_to_host ends us.
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            finished.set()

    def guest_to_host() -> None:
        try:
            while data := sock.recv(CHUNK):
                _write_all(1, data)
        except OSError:
            pass
        finished.set()

    # Two blocking threads rather than one select loop: a slow reader on one side can then
    # never stall the other direction.
    for target in (host_to_guest, guest_to_host):
        threading.Thread(target=target, daemon=True).start()
    finished.wait()
    sock.close()
    return 0


if __name__ == "__main__":
    os._exit(main(sys.argv))  # the stdin thread may still block in read(); do not wait for it
