#!/usr/bin/env python3
"""Starts sluiced and a real Prometheus server on loopback, waits for scrapes, then evaluates
every PromQL expression of the Grafana dashboard and of the alert rules through the HTTP API.
Fails on a query error, and on an empty result for a dashboard expression (every metric it
uses must exist). Stops both processes at the end. Bounded in time; no fixed ports."""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, predicate, bound_s):
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    sys.exit(f"FAIL: timed out waiting for {what}")


def query(base, expr):
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        return json.load(e)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sluiced", required=True)
    parser.add_argument("--dashboards", required=True)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-prom-")
    config = os.path.join(work, "sluiced.toml")
    with open(config, "w") as f:
        f.write("""[worker]
status_interval_ms = 0
[metrics]
port = 0
[pool]
buffer_count = 256
buffer_size_bytes = 4096
processing_reserve = 8
[[source]]
kind = "generator"
count = 20
records_per_second = 2000.0
[[listener]]
name = "in"
port = 0
""")
    worker_err = open(os.path.join(work, "sluiced.err"), "w+")
    worker = subprocess.Popen([args.sluiced, "--config", config], stderr=worker_err)
    prometheus = None
    try:
        def metrics_port():
            worker_err.flush()
            with open(worker_err.name) as f:
                m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", f.read())
            return m and m.group(1)
        port = wait_for("sluiced's metrics endpoint", metrics_port, 30)
        prom_port = free_port()
        prom_config = os.path.join(work, "prometheus.yml")
        with open(prom_config, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {os.path.join(os.path.abspath(args.dashboards), "alerts.yml")}
scrape_configs:
  - job_name: sluice
    static_configs:
      - targets: ["127.0.0.1:{port}"]
""")
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={prom_config}", f"--storage.tsdb.path={work}/data",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "prometheus.err"), "w"))
        base = f"http://127.0.0.1:{prom_port}"

        def scraped_enough():
            try:
                r = query(base, 'count_over_time(sluice_build_info{job="sluice"}[1m])')
            except OSError:
                return None
            result = r.get("data", {}).get("result", [])
            return result and float(result[0]["value"][1]) >= 6
        wait_for("six scrapes of sluiced", scraped_enough, 60)

        with open(os.path.join(args.dashboards, "sluice.json")) as f:
            dashboard = json.load(f)
        exprs = []
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$__rate_interval", "15s")
                expr = expr.replace("$job", ".*").replace("$instance", ".*")
                exprs.append(("dashboard: " + panel["title"], expr, True))
        with open(os.path.join(args.dashboards, "alerts.yml")) as f:
            for line in f:
                m = re.match(r"\s*expr:\s*(.+)$", line)
                if m:
                    exprs.append(("alert rule", m.group(1).strip(), False))
        failures = 0
        for where, expr, must_have_data in exprs:
            r = query(base, expr)
            if r.get("status") != "success":
                print(f"FAIL {where}: {expr}\n  error: {r.get('error')}")
                failures += 1
            elif must_have_data and not r["data"]["result"]:
                print(f"FAIL {where}: {expr}\n  empty result")
                failures += 1
            else:
                print(f"ok   {where}: {len(r['data']['result'])} series")
        rules = query(base, "ALERTS")  # the rules were loaded and are evaluated
        if rules.get("status") != "success":
            print("FAIL: ALERTS query")
            failures += 1
        print(f"{len(exprs) - failures} passed, {failures} failed")
        return 1 if failures else 0
    finally:
        for process in (prometheus, worker):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


if __name__ == "__main__":
    sys.exit(main())
