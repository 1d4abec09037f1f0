#!/usr/bin/env python3
"""Loads a simulated run into Prometheus: sluice-sim --openmetrics writes the metrics timeline
of the legacy deadlock in virtual time, promtool turns it into TSDB blocks, a real Prometheus
serves them, and queries see the incident: processing waiting with no buffer free for it."""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

EPOCH = 1_700_000_000  # virtual time 0 (see sim/simulation.cpp)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sim", required=True)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-om-")
    timeline = os.path.join(work, "timeline.om")
    run = subprocess.run([args.sim, "--policy", "legacy", "--buffers", "100",
                          "--legacy-buffers-per-source", "5", "--sources", "20",
                          "--openmetrics", timeline, "--json"], capture_output=True, text=True)
    report = json.loads(run.stdout)
    if run.returncode != 1 or not report["deadlock"]:
        sys.exit("FAIL: the legacy run should deadlock: " + run.stdout)
    data = os.path.join(work, "data")
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", timeline, data],
                   check=True, capture_output=True)
    port = free_port()
    with open(os.path.join(work, "empty.yml"), "w") as f:
        f.write("global: {}\n")
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={os.path.join(work, 'empty.yml')}",
         f"--storage.tsdb.path={data}", f"--web.listen-address=127.0.0.1:{port}",
         "--storage.tsdb.retention.time=100000d"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "prometheus.err"), "w"))
    try:
        end = EPOCH + report["virtual_seconds"]

        def ask(expr):
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(
                {"query": expr, "time": f"{end:.3f}"})
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)["data"]["result"]

        deadline = time.monotonic() + 60
        result = None
        while time.monotonic() < deadline:
            try:
                result = ask("sluice_pool_waiters")
                if result:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        if not result:
            sys.exit("FAIL: the simulated timeline is not queryable")
        waiting = {r["metric"]["requester"]: float(r["value"][1]) for r in result}
        free = ask('sluice_pool_buffers{state="free"}')
        print("waiters at the end:", waiting, "free:", free[0]["value"][1] if free else None)
        checks = [waiting.get("source", 0) > 0,
                  float(ask("sluice_processing_queue_depth")[0]["value"][1]) > 0]
        print(f"{sum(checks)} passed, {len(checks) - sum(checks)} failed")
        return 0 if all(checks) else 1
    finally:
        prometheus.send_signal(signal.SIGTERM)
        prometheus.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
