#!/usr/bin/env python3
"""TLS peers for the TLS integration tests, run as their own processes (Python's ssl module).

  tls_clients.py send PORT CAFILE FILE [CERT KEY]   connect, verify the server against CAFILE
                                                    (name "localhost"), send FILE, close
  tls_clients.py serve PORT CERT KEY FILE           accept one client, send FILE, close

Prints one JSON object: {"ok": true} or {"ok": false, "error": "..."}.
"""
import json
import socket
import ssl
import sys


def send(port, cafile, path, cert=None, key=None):
    context = ssl.create_default_context(cafile=cafile)
    if cert:
        context.load_cert_chain(cert, key)
    data = open(path, "rb").read()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(data)
                # A short read: a refused client certificate (TLS 1.3 reports it after the
                # handshake) shows up here as an error; a server that keeps reading, as a timeout.
                try:
                    s.settimeout(0.3)
                    s.recv(1)
                except (socket.timeout, TimeoutError):
                    pass
        print(json.dumps({"ok": True}))
    except (OSError, ssl.SSLError) as e:
        print(json.dumps({"ok": False, "error": str(e)}))


def serve(port, cert, key, path):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    data = open(path, "rb").read()
    with socket.create_server(("127.0.0.1", port)) as listener:
        listener.settimeout(30)
        print(json.dumps({"listening": port}), flush=True)
        raw, _ = listener.accept()
        try:
            with context.wrap_socket(raw, server_side=True) as s:
                s.sendall(data)
                s.unwrap()
            print(json.dumps({"ok": True}))
        except (OSError, ssl.SSLError) as e:
            print(json.dumps({"ok": False, "error": str(e)}))


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "send":
        extra = sys.argv[5:7] if len(sys.argv) > 6 else [None, None]
        send(int(sys.argv[2]), sys.argv[3], sys.argv[4], *extra)
    elif what == "serve":
        serve(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        sys.exit("unknown command " + what)
