#!/usr/bin/env python3
"""HTTP clients for the HTTP listener's integration tests, run as their own processes.

  http_clients.py client PORT            keep-alive requests with http.client; prints JSON
  http_clients.py pipeline PORT N        N pipelined POSTs written at once on one socket
  http_clients.py flood PORT CONNS REQS  CONNS threads, REQS bodies each, keep-alive;
                                         prints every request's body marker and status

Every body line is unique, so the test can find each body in what the sink received. Output is
one JSON object on stdout.
"""
import http.client
import json
import socket
import sys
import threading


def body(conn, req, lines=3):
    return "".join(f"c{conn}-r{req}-l{k} payload\n" for k in range(lines)).encode()


def client(port):
    """Requests a user makes with the standard library, on one keep-alive connection."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = {}
    c.request("POST", "/", body=b"py-one\npy-two\n")
    r = c.getresponse()
    r.read()
    out["post"] = r.status
    c.request("POST", "/?source=py", body=b"py-three")  # no final newline: sluice adds one
    r = c.getresponse()
    r.read()
    out["post_query"] = r.status
    c.request("GET", "/")
    r = c.getresponse()
    r.read()
    out["get"] = r.status
    out["allow"] = r.getheader("Allow")
    c.request("POST", "/elsewhere", body=b"nowhere\n")
    r = c.getresponse()
    r.read()
    out["other_path"] = r.status
    c.request("POST", "/", body=b"")
    r = c.getresponse()
    r.read()
    out["empty"] = r.status
    c.request("POST", "/", body=b"x" * 5000 + b"\n")
    r = c.getresponse()
    out["too_large_text"] = r.read().decode()
    out["too_large"] = r.status
    c.close()
    print(json.dumps(out))


def pipeline(port, n):
    """N requests in one write, answers read after: HTTP/1.1 pipelining."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    wire = b""
    for i in range(n):
        b = f"pipelined-{i}\n".encode()
        wire += b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
    s.sendall(wire)
    statuses = []
    data = b""
    while len(statuses) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        while b"\r\n\r\n" in data:
            head, data = data.split(b"\r\n\r\n", 1)
            status = int(head.split(b" ")[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            data = data[length:]
            statuses.append(status)
    s.close()
    print(json.dumps({"statuses": statuses}))


def flood(port, conns, reqs):
    """Many keep-alive connections posting as fast as answers come: drives the pool to
    pressure. Each request is reported with its marker and its status."""
    results = [[] for _ in range(conns)]

    def run(ci):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for ri in range(reqs):
            b = body(ci, ri)
            try:
                c.request("POST", "/", body=b)
                r = c.getresponse()
                r.read()
                results[ci].append([ri, r.status, r.getheader("Retry-After")])
                if r.getheader("Connection", "").lower() == "close":
                    c.close()
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            except (OSError, http.client.HTTPException) as e:
                results[ci].append([ri, -1, str(e)])
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "client":
        client(int(sys.argv[2]))
    elif what == "pipeline":
        pipeline(int(sys.argv[2]), int(sys.argv[3]))
    elif what == "flood":
        flood(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit("unknown command " + what)
