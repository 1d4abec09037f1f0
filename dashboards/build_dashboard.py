#!/usr/bin/env python3
"""Generates dashboards/sluice.json, the Grafana dashboard for sluice's buffer pressure.

The JSON is committed; this script is its source. tests run it and compare, so the two never
drift. Classic dashboard schema, pinned schemaVersion, stable uid, a datasource variable and
job/instance variables (their "All" is `.+`, so it never matches a missing label); every panel
has one unit and a description; rates use $__rate_interval. Read-only in Grafana (editable
false): changes go here. lint.py checks these rules.
"""
import json
import sys

SEL = 'job=~"$job", instance=~"$instance"'
RI = "$__rate_interval"
DS = {"type": "prometheus", "uid": "${datasource}"}

panels = []
next_id = [1]


def panel(title, description, unit, targets, x, y, w=8, h=8, kind="timeseries", stack=False,
          legend=True):
    p = {
        "id": next_id[0],
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend_fmt}
            for i, (expr, legend_fmt) in enumerate(targets)
        ],
        "options": {},
    }
    if kind == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "fillOpacity": 30 if stack else 0,
        }
        p["options"]["legend"] = {"showLegend": legend, "displayMode": "list", "placement": "bottom"}
    else:
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area"}
    next_id[0] += 1
    panels.append(p)


def row(title, y):
    panels.append({"id": next_id[0], "type": "row", "title": title, "collapsed": False,
                   "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
    next_id[0] += 1


row("Overview", 0)
panel("Sources running", "Sources in state running, over all kinds.", "short",
      [(f'sum(sluice_sources{{{SEL}, state="running"}})', "running")], 0, 1, 4, 4, "stat")
panel("Ingest rate", "Bytes read by all sources per second.", "Bps",
      [(f"sum(rate(sluice_source_received_bytes_total{{{SEL}}}[{RI}]))", "bytes/s")], 4, 1, 4, 4, "stat")
panel("Records rate", "Records framed by processing per second.", "short",
      [(f"sum(rate(sluice_source_received_records_total{{{SEL}}}[{RI}]))", "records/s")], 8, 1, 4, 4, "stat")
panel("Pool free", "Share of the pool's buffers that are free.", "percentunit",
      [(f'sum(sluice_pool_buffers{{{SEL}, state="free"}}) / sum(sluice_pool_capacity_buffers{{{SEL}}})', "free")],
      12, 1, 4, 4, "stat")
panel("Waiters", "Acquisitions suspended on the pool now (sources and processing).", "short",
      [(f"sum(sluice_pool_waiters{{{SEL}}})", "waiters")], 16, 1, 4, 4, "stat")
panel("Threads", "Threads of the worker process; constant however many sources run.", "short",
      [(f"max(sluice_process_threads{{{SEL}}})", "threads")], 20, 1, 4, 4, "stat")

row("Pool pressure", 5)
panel("Buffers by state", "Free, held by sources (being filled), queued for processing and being "
      "processed; the stack always reaches capacity.", "short",
      [(f"sum by (state) (sluice_pool_buffers{{{SEL}}})", "{{state}}")], 0, 6, 8, 8, stack=True)
panel("Acquire wait p50 / p99", "How long suspended acquisitions waited for a buffer, by requester.", "s",
      [(f"histogram_quantile(0.5, sum by (le, requester) (rate(sluice_pool_acquire_wait_seconds_bucket{{{SEL}}}[{RI}])))", "p50 {{requester}}"),
       (f"histogram_quantile(0.99, sum by (le, requester) (rate(sluice_pool_acquire_wait_seconds_bucket{{{SEL}}}[{RI}])))", "p99 {{requester}}")],
      8, 6)
panel("Reserved vs floating", "Buffers guaranteed to sources (sum of reserves) and to processing, "
      "and the floating buffers lendable above reserves.", "short",
      [(f"sum by (class) (sluice_pool_reserved_buffers{{{SEL}}})", "reserved {{class}}"),
       (f"sum(sluice_pool_floating_buffers{{{SEL}}})", "floating")], 16, 6)
panel("Acquisitions by result", "Acquisitions per second: immediate, after a wait, aborted, or a "
      "try that found none.", "ops",
      [(f"sum by (requester, result) (rate(sluice_pool_acquisitions_total{{{SEL}}}[{RI}]))", "{{requester}} {{result}}")],
      0, 14)
panel("Waiters by requester", "Acquisitions suspended now.", "short",
      [(f"sum by (requester) (sluice_pool_waiters{{{SEL}}})", "{{requester}}")], 8, 14)
panel("Registrations", "Source registrations per second by result; refused means admission said no.",
      "ops", [(f"sum by (result) (rate(sluice_registrations_total{{{SEL}}}[{RI}]))", "{{result}}")], 16, 14)

row("Flush and latency", 22)
panel("Flushes by reason", "Buffers handed to processing per second: full, timeout, demand (processing "
      "idle), pressure (others wait), stop, end of stream.", "ops",
      [(f"sum by (reason) (rate(sluice_flushes_total{{{SEL}}}[{RI}]))", "{{reason}}")], 0, 23, stack=True)
panel("Flush fill ratio p50", "Median share of a flushed buffer that holds data.", "percentunit",
      [(f"histogram_quantile(0.5, sum by (le) (rate(sluice_flush_fill_ratio_bucket{{{SEL}}}[{RI}])))", "p50")], 8, 23)
panel("Processing queue", "Buffers waiting for processing.", "short",
      [(f"sum(sluice_processing_queue_depth{{{SEL}}})", "queued")], 16, 23)
panel("Processing time per buffer p99", "99th percentile of the time to frame, parse and sink one buffer.", "s",
      [(f"histogram_quantile(0.99, sum by (le) (rate(sluice_processing_buffer_duration_seconds_bucket{{{SEL}}}[{RI}])))", "p99")],
      0, 31)
panel("Oldest queued buffer", "Age of the oldest buffer waiting for processing (0 when none).", "s",
      [(f"max(sluice_processing_oldest_queued_seconds{{{SEL}}})", "oldest")], 8, 31)

row("Sources", 39)
panel("Busy / idle / backpressured", "Share of source time spent reading, waiting for data, and waiting "
      "for a buffer, by kind.", "percentunit",
      [(f"sum by (kind, activity) (rate(sluice_source_seconds_total{{{SEL}}}[{RI}])) / ignoring(activity) group_left "
        f"sum by (kind) (rate(sluice_source_seconds_total{{{SEL}}}[{RI}]))", "{{kind}} {{activity}}")], 0, 40)
panel("Top backpressured kinds", "Sources waiting for buffers, on average (source-seconds per second "
      "spent waiting), top 5 kinds.", "short",
      [(f'topk(5, sum by (kind) (rate(sluice_source_seconds_total{{{SEL}, activity="backpressured"}}[{RI}])))', "{{kind}}")],
      8, 40)
panel("Errors and reconnects", "Transport failures and reconnects per second, by kind; refused "
      "connections of listeners.", "ops",
      [(f"sum by (kind) (rate(sluice_source_errors_total{{{SEL}}}[{RI}]))", "errors {{kind}}"),
       (f"sum by (kind) (rate(sluice_source_reconnects_total{{{SEL}}}[{RI}]))", "reconnects {{kind}}"),
       (f'sum(rate(sluice_listener_connections_total{{{SEL}, result="refused"}}[{RI}]))', "connections refused")],
      16, 40)
panel("Sources by state", "Registered sources by state and kind.", "short",
      [(f"sum by (kind, state) (sluice_sources{{{SEL}}})", "{{kind}} {{state}}")], 0, 48)

row("Threads", 56)
panel("Threads by pool", "Threads of the fixed pools and of the whole process.", "short",
      [(f"sum by (pool) (sluice_thread_pool_threads{{{SEL}}})", "{{pool}}"),
       (f"max(sluice_process_threads{{{SEL}}})", "process")], 0, 57)
panel("Pool tasks queued and active",
      "Tasks waiting for a thread and running, per pool: io = lane handlers (a queue that stays "
      "above zero means the I/O lanes are saturated), compute = processing items, blocking = "
      "legacy reads.", "short",
      [(f"sum by (pool) (sluice_thread_pool_queued_tasks{{{SEL}}})", "{{pool}} queued"),
       (f"sum by (pool) (sluice_thread_pool_active_tasks{{{SEL}}})", "{{pool}} active")], 8, 57)

row("Delivery", 65)
panel("Processed lag", "Bytes read by sources that track processed positions (checkpointed files, "
      "MQTT QoS 1) and not yet processed, by kind.", "bytes",
      [(f"sum by (kind) (sluice_processed_lag_bytes{{{SEL}}})", "{{kind}}")], 0, 66)
panel("Processed lag age", "Longest time a tracked source's processed position has not moved while "
      "its bytes wait, by kind.", "s",
      [(f"max by (kind) (sluice_processed_lag_seconds{{{SEL}}})", "{{kind}}")], 8, 66)
panel("Checkpoints", "Checkpoint saves per second by result, and the bytes processed but not yet "
      "saved: what a crash now would deliver again.", "short",
      [(f"sum by (result) (rate(sluice_checkpoint_writes_total{{{SEL}}}[{RI}]))", "writes {{result}}"),
       (f"sum(sluice_checkpoint_unsaved_bytes{{{SEL}}})", "unsaved bytes")], 16, 66)

dashboard = {
    "uid": "sluice-buffer-pressure",
    "title": "sluice — buffer pressure",
    "description": "Buffer pool, flushes, sources and threads of sluice workers.",
    "schemaVersion": 38,
    "version": 1,
    "editable": False,
    "tags": ["sluice"],
    "time": {"from": "now-30m", "to": "now"},
    "refresh": "10s",
    "timezone": "",
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source",
         "current": {}, "hide": 0},
        {"name": "job", "type": "query", "datasource": DS, "label": "Job",
         "query": {"query": "label_values(sluice_build_info, job)", "refId": "job"},
         "definition": "label_values(sluice_build_info, job)", "includeAll": True, "multi": True,
         "allValue": ".+", "refresh": 2, "current": {}, "hide": 0},
        {"name": "instance", "type": "query", "datasource": DS, "label": "Instance",
         "query": {"query": 'label_values(sluice_build_info{job=~"$job"}, instance)', "refId": "instance"},
         "definition": 'label_values(sluice_build_info{job=~"$job"}, instance)', "includeAll": True,
         "multi": True, "allValue": ".+", "refresh": 2, "current": {}, "hide": 0},
    ]},
    "annotations": {"list": []},
    "panels": panels,
}

json.dump(dashboard, sys.stdout, indent=2, sort_keys=True)
sys.stdout.write("\n")
