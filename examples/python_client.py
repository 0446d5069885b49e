#!/usr/bin/env python3
"""A tlsrpc client in Python, written from PROTOCOL.md with the standard library only.

    # against a server with the test certificates:
    #   deno run -A cli.ts serve examples/calc.ts --cert testdata/server.pem --key testdata/server.key
    python3 examples/python_client.py --port 7443 --ca testdata/ca.pem add 2 3
    # against `deno run -A cli.ts serve examples/calc.ts` (development certificates):
    python3 examples/python_client.py --ca "${TLSRPC_HOME:-$HOME/.local/state/tlsrpc}/dev-certs/ca.pem" add 2 3

Each ARG is parsed as JSON when it is valid JSON, else taken as a string, as the Deno CLI does.
Exit codes: 0 ok, 1 the server answered with an error, 3 connection failure.
"""

import argparse
import itertools
import json
import socket
import ssl
import struct
import sys

MAX_FRAME_BYTES = 16 * 1024 * 1024


class RpcError(Exception):
    """An error response: code, message and data."""

    def __init__(self, code, message, data=None):
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.data = data


class Client:
    """One TLS connection; calls are sent one at a time and answered in order here."""

    def __init__(self, host="localhost", port=7443, cafile=None, timeout=30.0):
        context = ssl.create_default_context(cafile=cafile)
        raw = socket.create_connection((host, port), timeout=timeout)
        self._sock = context.wrap_socket(raw, server_hostname=host)
        self._ids = itertools.count(1)

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, method, *params, **named):
        """Calls method with by-position params, or with by-name params when given keywords."""
        request_id = next(self._ids)
        request = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if named:
            request["params"] = named
        elif params:
            request["params"] = list(params)
        self._send(request)
        while True:
            response = self._receive()
            if response.get("id") == request_id:
                break
            if response.get("id") is None and "error" in response:
                break  # the server could not read what we sent (section 2)
        if "error" in response:
            error = response["error"]
            raise RpcError(error.get("code"), error.get("message"), error.get("data"))
        return response.get("result")

    def notify(self, method, *params):
        """Sends a notification, which gets no response."""
        self._send({"jsonrpc": "2.0", "method": method, "params": list(params)})

    def _send(self, message):
        payload = json.dumps(message, separators=(",", ":")).encode("utf-8")
        self._sock.sendall(struct.pack(">I", len(payload)) + payload)

    def _receive(self):
        (length,) = struct.unpack(">I", self._read_exactly(4))
        if length == 0 or length > MAX_FRAME_BYTES:
            raise ConnectionError(f"bad frame length {length}")
        return json.loads(self._read_exactly(length).decode("utf-8"))

    def _read_exactly(self, count):
        chunks = []
        while count > 0:
            chunk = self._sock.recv(min(count, 65536))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)


def parse_arg(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def main():
    parser = argparse.ArgumentParser(description="Call a tlsrpc server.")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=7443)
    parser.add_argument("--ca", help="CA certificate, PEM")
    parser.add_argument("--params", help="by-name params, a JSON object")
    parser.add_argument("method")
    parser.add_argument("args", nargs="*")
    options = parser.parse_args()
    try:
        with Client(options.host, options.port, options.ca) as client:
            if options.params is not None:
                result = client.call(options.method, **json.loads(options.params))
            else:
                result = client.call(options.method, *map(parse_arg, options.args))
    except RpcError as error:
        print(f"error: {error.code} {error.message}", file=sys.stderr)
        return 1
    except (OSError, ConnectionError) as error:
        print(f"error: cannot call {options.method!r}: {error}", file=sys.stderr)
        return 3
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
