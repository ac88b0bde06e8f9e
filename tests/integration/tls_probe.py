"""Run on one host of the multi-host test: wait for a TLS server and check its name.

``python tls_probe.py HOST PORT CA SERVER_NAME TIMEOUT_S`` connects to HOST:PORT
until the handshake completes, verifying the certificate against CA for
SERVER_NAME. Exit 0: verified; 2: the certificate does not match (or does not
verify); 3: nothing answered within TIMEOUT_S (connection refused or timed out).
Standalone (standard library only) so it runs with no repository on sys.path.
"""

from __future__ import annotations

import socket
import ssl
import sys
import time


def main(argv: list[str]) -> int:
    host, port, ca, server_name, timeout_s = argv
    ctx = ssl.create_default_context(cafile=ca)
    deadline = time.monotonic() + float(timeout_s)
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            with (
                socket.create_connection((host, int(port)), timeout=2.0) as raw,
                ctx.wrap_socket(raw, server_hostname=server_name),
            ):
                print("verified")
                return 0
        except ssl.SSLCertVerificationError as exc:
            print(f"certificate refused: {exc.verify_message}")
            return 2
        except OSError as exc:
            last = repr(exc)
        # Polling a socket that is not listening yet: there is no event to wait on.
        time.sleep(0.2)
    print(f"unreachable: {last}")
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
