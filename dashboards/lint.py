#!/usr/bin/env python3
"""Checks the dashboard and the alert rules against the rules Grafana's dashboard linter and
operators' runbooks ask for. Exits 1 with one line per problem.

Dashboard: read-only (editable false); query variables' "All" is `.+`; every query selects
$job and $instance; every panel has a description and exactly one unit (no per-series unit
overrides); no time unit on a ratio (a rate of a *_seconds_total counter, or a division).
Alerts: every rule has a runbook_url whose section exists in README.md; only the target-absent
rule names the job, and it takes the job selector from build_alerts.py's parameter.
"""
import json
import os
import re
import sys

import build_alerts

HERE = os.path.dirname(os.path.abspath(__file__))
TIME_UNITS = {"s", "ms", "us", "µs", "ns", "m", "h", "d", "dtdurations", "dtdurationms"}


def readme_anchors():
    anchors = set()
    with open(os.path.join(HERE, "..", "README.md")) as f:
        for line in f:
            m = re.match(r"#+ (.*)", line)
            if m:
                # GitHub's anchor: lower case, punctuation dropped, spaces to dashes.
                text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
                anchors.add(text.replace(" ", "-"))
    return anchors


def dashboard_problems(d):
    problems = []
    if d.get("editable") is not False:
        problems.append("dashboard: editable must be false (changes go to build_dashboard.py)")
    for v in d["templating"]["list"]:
        if v.get("type") == "query" and v.get("includeAll") and v.get("allValue") != ".+":
            problems.append(f"variable {v['name']}: allValue must be .+ (it is {v.get('allValue')!r})")
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        title = p["title"]
        if not p.get("description"):
            problems.append(f"panel {title!r}: no description")
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if not unit:
            problems.append(f"panel {title!r}: no unit")
        for o in p.get("fieldConfig", {}).get("overrides", []):
            if any(prop.get("id") == "unit" for prop in o.get("properties", [])):
                problems.append(f"panel {title!r}: a second unit in an override")
        kinds = set()
        for t in p.get("targets", []):
            for name in re.findall(r"sluice_\w+", t["expr"]):
                kinds.add("seconds" if re.search(r"_seconds(_bucket|_sum|_count)?$", name)
                          else "other")
        if len(kinds) > 1 and not any(" / " in t["expr"] for t in p.get("targets", [])):
            problems.append(f"panel {title!r}: series of two units (seconds and others) in one panel")
        for t in p.get("targets", []):
            expr = t["expr"]
            if "$job" not in expr or "$instance" not in expr:
                problems.append(f"panel {title!r}: a query without the $job/$instance selector")
            is_ratio = " / " in expr or re.search(r"rate\(\w+_seconds_total", expr)
            if unit in TIME_UNITS and is_ratio and "histogram_quantile" not in expr:
                problems.append(f"panel {title!r}: time unit {unit!r} on a ratio: {expr}")
    return problems


def alert_problems():
    problems = []
    anchors = readme_anchors()
    for r in build_alerts.RULES:
        anchor = r["alert"].lower()
        if anchor not in anchors:
            problems.append(f"alert {r['alert']}: README.md has no section #{anchor} (its runbook)")
        if "job=" in r["expr"]:
            problems.append(f"alert {r['alert']}: names a job; take it from --job-selector")
    text = build_alerts.render('job="x"', "R")
    if 'absent(up{job="x"} == 1)' not in text:
        problems.append("alerts: the target-absent rule does not take the job selector")
    if text.count("runbook_url:") != len(build_alerts.RULES):
        problems.append("alerts: not every rule has a runbook_url")
    return problems


def main():
    with open(os.path.join(HERE, "sluice.json")) as f:
        d = json.load(f)
    problems = dashboard_problems(d) + alert_problems()
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
