#!/usr/bin/env python3
"""Generates dashboards/alerts.yml, the alert rules for sluice workers.

The YAML is committed; this script is its source (tests run it and compare). The job that
scrapes sluiced is a parameter: the absent-target rule selects it, every other rule works on
sluice_ metrics of any job. Every rule links its runbook, a section of README.md.

    dashboards/build_alerts.py                                 # job="sluice"
    dashboards/build_alerts.py --job-selector 'job="ingest"' --runbook-base https://…/README.md
"""
import argparse
import sys

RULES = [
    {
        "alert": 'SluiceNoProgress',
        "comment": 'Acquisitions wait, yet nothing reaches processing: a stall or a deadlock.',
        "expr": 'sum by (job, instance) (sluice_pool_waiters) > 0 and sum by (job, instance) (rate(sluice_processing_buffers_total[2m])) == 0',
        "for_": '2m',
        "severity": 'critical',
        "summary": 'sluice {{ $labels.instance }}: waiters but no buffer processed for 2m',
        "description": 'Sources or processing wait for buffers while nothing is processed. Check the processing queue and the sink; a deadlock here is a bug.',
    },
    {
        "alert": 'SluiceProcessingStarved',
        "comment": 'Processing itself waits for output buffers: its reserve is exhausted.',
        "expr": 'sum by (job, instance) (sluice_pool_waiters{requester="processing"}) > 0',
        "for_": '1m',
        "severity": 'critical',
        "summary": 'sluice {{ $labels.instance }}: processing waits for buffers',
        "description": 'Processing waits for output buffers for over a minute; raise pool.processing_reserve to at least compute_threads.',
    },
    {
        "alert": 'SluicePoolExhausted',
        "comment": '',
        "expr": 'sum by (job, instance) (sluice_pool_buffers{state="free"}) / sum by (job, instance) (sluice_pool_capacity_buffers) < 0.02',
        "for_": '5m',
        "severity": 'warning',
        "summary": 'sluice {{ $labels.instance }}: under 2% of buffers free for 5m',
        "description": 'The pool is nearly exhausted; sources are being backpressured. Raise pool.buffer_count or speed up processing.',
    },
    {
        "alert": 'SluiceSourcesBackpressured',
        "comment": 'Over half of source time spent waiting for buffers, per kind.',
        "expr": 'sum by (job, instance, kind) (rate(sluice_source_seconds_total{activity="backpressured"}[5m])) / sum by (job, instance, kind) (rate(sluice_source_seconds_total[5m])) > 0.5',
        "for_": '10m',
        "severity": 'warning',
        "summary": 'sluice {{ $labels.instance }}: {{ $labels.kind }} sources backpressured over half the time',
        "description": 'Sources of kind {{ $labels.kind }} spend most of their time waiting for buffers; processing is the bottleneck.',
    },
    {
        "alert": 'SluiceAcquireWaitHigh',
        "comment": '',
        "expr": 'histogram_quantile(0.99, sum by (job, instance, le) (rate(sluice_pool_acquire_wait_seconds_bucket{requester="source"}[5m]))) > 0.5',
        "for_": '5m',
        "severity": 'warning',
        "summary": 'sluice {{ $labels.instance }}: p99 buffer wait above 500 ms',
        "description": 'Sources wait long for buffers; latency suffers. Check pool pressure and processing time.',
    },
    {
        "alert": 'SluiceRegistrationRefused',
        "comment": '',
        "expr": 'sum by (job, instance) (increase(sluice_registrations_total{result="refused"}[5m])) > 0',
        "for_": None,
        "severity": 'warning',
        "summary": 'sluice {{ $labels.instance }}: source registrations refused',
        "description": 'Admission refused sources in the last 5m (their reserves do not fit, or buffers are lent out). The worker log states the numbers.',
    },
    {
        "alert": 'SluiceTargetAbsent',
        "comment": '',
        "expr": "absent(up{JOB_SELECTOR} == 1)",
        "for_": '1m',
        "severity": 'critical',
        "summary": 'No sluice worker is being scraped',
        "description": 'Prometheus sees no healthy sluice target: the worker is down or its metrics endpoint unreachable.',
    },
    {
        "alert": 'SluiceCheckpointWritesFailing',
        "comment": 'Checkpoints cannot be saved: a crash would repeat more and more.',
        "expr": 'sum by (job, instance) (increase(sluice_checkpoint_writes_total{result="failed"}[5m])) > 0 and sum by (job, instance) (increase(sluice_checkpoint_writes_total{result="ok"}[5m])) == 0',
        "for_": '5m',
        "severity": 'warning',
        "summary": 'sluice {{ $labels.instance }}: no checkpoint saved for 5m, saves fail',
        "description": 'Every checkpoint save fails (a full disk, a directory that went read-only): after a crash the file sources would read again everything since their last saved checkpoint.',
    },
]


def quoted(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(job_selector, runbook_base):
    lines = ["# Alert rules for sluice workers, generated by build_alerts.py (do not edit by hand).",
             "# Tested by `promtool test rules alerts_test.yml` (ctest).",
             "groups:", "  - name: sluice", "    rules:"]
    for r in RULES:
        lines.append(f"      - alert: {r['alert']}")
        if r["comment"]:
            lines.append(f"        # {r['comment']}")
        expr = r["expr"].replace("JOB_SELECTOR", job_selector)
        lines.append(f"        expr: {expr}")
        if r["for_"]:
            lines.append(f"        for: {r['for_']}")
        lines.append(f"        labels: {{severity: {r['severity']}}}")
        lines.append("        annotations:")
        lines.append(f"          summary: {quoted(r['summary'])}")
        lines.append(f"          description: {quoted(r['description'])}")
        lines.append(f"          runbook_url: {quoted(runbook_base + '#' + r['alert'].lower())}")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job-selector", default='job="sluice"',
                        help='the label matchers of the job that scrapes sluiced (default job="sluice")')
    parser.add_argument("--runbook-base", default="README.md",
                        help="where README.md is published; each rule links a section of it")
    args = parser.parse_args()
    sys.stdout.write(render(args.job_selector, args.runbook_base))


if __name__ == "__main__":
    main()
