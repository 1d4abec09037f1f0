"""Renders bench/RESULTS.md from the results run_bench.py collected (one run, side by side)."""


PAD = 1000  # run_bench.PAD_BYTES: the 1 KiB-record series


def _row(results, mode, n, pad=0):
    for r in results["ingest"]:
        if r["mode"] == mode and r["sources"] == n and r.get("pad_bytes", 0) == pad:
            return r
    return None


def _record_size(r):
    """Mean bytes per record of an ingest run."""
    return r["bytes_delivered"] / (r["records_each"] * r["sources"])


def _ratio(a, b):
    return a / b if a and b else float("nan")


def _ceiling(results, name):
    for c in results["ceilings"]:
        if c["measure"] == name:
            return c["gb_per_second"]
    return None


def counts_of(results, pad=0):
    return sorted({r["sources"] for r in results["ingest"] if r.get("pad_bytes", 0) == pad})


def _met(ok):
    return "**met**" if ok else "**not met**"


def targets(results):
    """[(target, measured, met)] for the issue's targets."""
    rows = []
    counts = counts_of(results)
    sluice_threads = [_row(results, "sluice", n)["threads_max"] for n in counts if _row(results, "sluice", n)]
    base_threads = [_row(results, "thread_per_source", n)["threads_max"] for n in counts
                    if _row(results, "thread_per_source", n)]
    constant = bool(sluice_threads) and max(sluice_threads) - min(sluice_threads) <= 1
    rows.append(("threads constant from 10 to 10,000 sources",
                 f"sluice {min(sluice_threads)}–{max(sluice_threads)}; baseline {min(base_threads)}–{max(base_threads)}",
                 constant))
    top = max(counts)
    s, b = _row(results, "sluice", top), _row(results, "thread_per_source", top)
    start_ratio = _ratio(b["start_seconds"], s["start_seconds"]) if s and b else float("nan")
    rows.append((f"start of {top:,} sources ≥ 30× faster than the baseline",
                 f"{s['start_seconds'] * 1e3:.1f} ms vs {b['start_seconds'] * 1e3:.1f} ms = {start_ratio:.1f}×",
                 start_ratio >= 30))
    for pad, size in ((0, "19-byte"), (PAD, "1 KiB")):
        for n in (1000, 10000):
            s, b = _row(results, "sluice", n, pad), _row(results, "thread_per_source", n, pad)
            if s and b:
                r = _ratio(s["gb_per_second"], b["gb_per_second"])
                rows.append((f"throughput ≥ 1.3× the baseline at {n:,} sources, {size} records",
                             f"{s['gb_per_second']:.3f} vs {b['gb_per_second']:.3f} GB/s = {r:.2f}×", r >= 1.3))
    iperf = _ceiling(results, "iperf3")
    if iperf:
        for pad, size in ((0, "19-byte"), (PAD, "1 KiB")):
            runs = [r for r in results["ingest"] if r["mode"] == "sluice" and r.get("pad_bytes", 0) == pad]
            if runs:
                best = max(runs, key=lambda r: r["gb_per_second"])
                rows.append((f"throughput ≥ 70% of the iperf3 single-stream ceiling, {size} records",
                             f"best sluice {best['gb_per_second']:.3f} GB/s ({best['sources']:,} sources) = "
                             f"{100 * best['gb_per_second'] / iperf:.0f}% of {iperf:.2f} GB/s",
                             best["gb_per_second"] >= 0.7 * iperf))
    s = _row(results, "sluice", top)
    rows.append(("≤ 1 KiB resident per idle source",
                 f"{s['rss_per_idle_source_bytes']:.0f} B at {top:,} sources", s["rss_per_idle_source_bytes"] <= 1024))
    demand = [r for r in results["latency"] if r["mode"] == "sluice" and r["demand_flush"]]
    if demand:
        worst = max(r["p99_ms"] for r in demand)
        rows.append(("p99 light-load latency ≤ 2 ms with demand flush",
                     f"worst p99 {worst:.3f} ms over {', '.join(str(r['sources']) for r in demand)} sources",
                     worst <= 2.0))
    sims = [r for r in results["sim"] if r.get("ok")]
    if sims:
        big = max(sims, key=lambda r: r["sources"])
        rows.append(("simulator ≥ 1M events/s",
                     f"{big['events_per_second'] / 1e6:.2f}M events/s at {big['sources']:,} sources",
                     big["events_per_second"] >= 1e6))
    return rows


def render(results):
    m = results["machine"]
    out = []
    w = out.append
    w("# Benchmark results\n")
    w("Written by `ci/bench` (full mode) from one run; every number below was measured side by side "
      "in that run. Regenerate with `ci/bench`; the raw numbers are in `bench/results.json`.\n")
    w(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, {m['compiler']}, "
      f"open-file limit {m['open_file_limit']}. The load generator (`sluice-loadgen`, one thread) runs in its "
      "own process on the same two cores, so every throughput figure shares the CPU with it.\n")
    w("Noise: on this 2-core machine repeated runs differ by about ±10% in throughput and more in "
      "start time at 10 and 100 sources; each ingest row is the median of the runs listed.\n")

    w("## Targets\n")
    w("| target | measured | |")
    w("| --- | --- | --- |")
    for name, measured, ok in targets(results):
        w(f"| {name} | {measured} | {_met(ok)} |")
    w("")

    w("## Where targets are missed, and what dominates\n")
    top = max(counts_of(results))
    s10k = _row(results, "sluice", top)
    b10k = _row(results, "thread_per_source", top)
    if s10k and b10k and "start_register_seconds" in s10k:
        rest = s10k["start_seconds"] - s10k["start_register_seconds"] - s10k["start_call_seconds"]
        w(f"- **Start of {top:,} sources.** Measured split of sluice's {s10k['start_seconds'] * 1e3:.0f} ms: "
          f"{s10k['start_register_seconds'] * 1e3:.0f} ms inside `register_source` (pool admission under the "
          f"pool mutex, the registry entry, a processing channel, a timer), "
          f"{s10k['start_call_seconds'] * 1e3:.0f} ms inside `start` (the coroutine frame and its post to a "
          f"lane) and {rest * 1e3:.0f} ms until the lanes have run every first step (the generator's first "
          f"record, its buffer, emit and processing), all on the same 2 cores: "
          f"{s10k['start_seconds'] / top * 1e6:.1f} µs per source; the baseline's thread start costs "
          f"{b10k['start_seconds'] / top * 1e6:.1f} µs per source, so the ratio is "
          f"{b10k['start_seconds'] / s10k['start_seconds']:.1f}×, not 30×. The next step is a batched registration (one pool lock and one post per lane for many "
          "sources) and a lighter first step.")
    w("- **Throughput against iperf3.** iperf3 moves one large stream with no framing; here the load "
      "generator formats every record in one thread and uses about as much CPU as the worker "
      "(`loadgen_cpu_seconds` in results.json), the worker frames, counts CSV fields and checks every "
      "record, and all of it shares 2 cores. The worker's CPU per GB (the table below) is the figure "
      "to compare; the ingest GB/s is bounded by the 2 cores, not by the runtime's design.")
    w("- **Throughput ratio at 1,000 sources.** With 1,000 connections the baseline's threads are "
      "still few enough for the scheduler; its cost shows in CPU per GB (the ratio table) before it "
      "shows in GB/s, which the shared cores and the load generator cap for both runners.")
    w("- **Resident memory per idle source.** heaptrack at 5,000 idle sources, per source: about 290 B "
      "for the read-loop coroutine frame, 245 B for `co_spawn`'s entry frame, 175 B for the run "
      "coroutine, about 440 B of Asio awaitable frames, 250 B for the processing channel, 130 B for the "
      "registry entry, the flush timer, the socket's reactor state, and allocator overhead. Two items "
      "are fixed (see below); reaching 1 KiB needs an idle source to be a parked readiness callback "
      "rather than a suspended coroutine stack.")
    lat = {(r["mode"], r["demand_flush"], r["sources"]): r for r in results["latency"]}
    big = max((r["sources"] for r in results["latency"]), default=0)
    if ("sluice", True, big) in lat and ("thread_per_source", True, big) in lat:
        w(f"- **Latency at {big:,} sources.** sluice's p99 is {lat[('sluice', True, big)]['p99_ms']:.1f} ms "
          f"against the baseline's {lat[('thread_per_source', True, big)]['p99_ms']:.1f} ms (which emits after "
          "every read: at light load one buffer per record, which it pays for in CPU per GB). In a run "
          "with flush counts (`sluice-ingest-bench --latency --sources 1000 --rate 20`), all 60,000 "
          "buffers were demand flushes — at once, or at processing's next idle moment — and none waited "
          "for the timeout or pressure. Where the tail arises (buffers waiting for that idle moment, the "
          "compute pool's wake-ups, or 1,000 sources sharing 2 lanes and 2 cores with the load generator) "
          "is not yet located. Records are also stamped when the load generator's "
          "per-connection timer fires, so its own lag counts. At 10 and 100 sources the demand flush keeps "
          "p99 under 2 ms, while the flush timeout alone gives a p50 of about half the 50 ms timeout.")
    w("- **Simulator.** perf at 10,000 sources shows a flat profile: processing (framing) 9%, record "
      "formatting 7%, the record checker 5%, Asio handler dispatch, malloc/free 10% together; the "
      "simulator runs the real pipeline on every byte. No single fix gets 2×; fewer allocations per "
      "step (frames, handlers) is the largest item.")
    w("")

    w("## Fixed from this benchmark: before → after\n")
    w("Measured with `sluice-ingest-bench` on this machine, 2026-11-27, before and after each change "
      "(single `sluice-ingest-bench` runs for the intermediate step, full `ci/bench` runs otherwise; ±10%).\n")
    w("| change | measure | before | after |")
    w("| --- | --- | ---: | ---: |")
    w("| processing channels allocate their queue on first use (libstdc++'s `std::deque` allocated a "
      "map and a node for every idle source) | resident B per idle source, 10,000 sources | 4,133 | 3,464 |")
    w("| `stream_source::wait_readable` returns the stream's awaitable instead of wrapping it in one more "
      "coroutine frame | resident B per idle source, 10,000 sources | 3,464 | 3,269 |")
    w("| demand flush while processing has fewer items queued than compute threads (was: only when "
      "empty) | p99 latency, 1,000 sources, 20 records/s each | 8.2–13.4 ms | 6.3–9.1 ms |")
    w("| baseline fairness: idle legacy generator threads block until due instead of napping 1 ms "
      "(10,000 napping threads saturated both cores) | baseline start of 10,000 sources | 170–424 s | 0.32–0.37 s |")
    w("")

    w("## Ceilings (same run)\n")
    w("| ceiling | GB/s |")
    w("| --- | --- |")
    for c in results["ceilings"]:
        w(f"| {c['measure']} | {c['gb_per_second']:.2f} |")
    w("")

    w("## Ingestion: sluice vs thread per source\n")
    w("TCP sources on loopback (one accepted connection each), the same pool, processing "
      "(newline framing, CSV field counting) and a sink that checks every record per origin. "
      "Throughput is bytes delivered to the pipeline divided by the time from the start signal to "
      "the last byte; CPU is the worker process's; idle memory is (RSS with N idle connections − RSS "
      "before) / N, so kernel socket memory is not in it. Two record sizes: the generator's records "
      "(`<id>,<n>,<value>`, about 19 bytes, where per-record work — the load generator formatting, "
      "the sink checking — dominates) and the same records with a 1,000-byte padding field that the "
      "sink checks too (about 1 KiB, where per-byte work dominates).\n")
    w("| sources | record bytes | runner | threads | start N sources (ms) | accept N connections (ms) | "
      "idle B/source | GB/s | CPU s/GB | load generator CPU s | verified |")
    w("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for pad in (0, PAD):
        for n in counts_of(results, pad):
            for mode in ("sluice", "thread_per_source"):
                r = _row(results, mode, n, pad)
                if r:
                    w(f"| {n:,} | {_record_size(r):,.0f} | {mode} | {r['threads_max']} | "
                      f"{r['start_seconds'] * 1e3:.1f} | "
                      f"{r['accept_seconds'] * 1e3:.1f} | {r['rss_per_idle_source_bytes']:.0f} | "
                      f"{r['gb_per_second']:.3f} | {r['cpu_seconds_per_gb']:.2f} | {r['loadgen_cpu_seconds']:.2f} | "
                      f"{'yes, ' + format(r['bytes_delivered'], ',') + ' B' if r['verified'] else 'NO'} |")
    w("")
    w("| sources | record bytes | throughput sluice / baseline | CPU per GB baseline / sluice | "
      "start baseline / sluice | threads baseline / sluice |")
    w("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for pad in (0, PAD):
        for n in counts_of(results, pad):
            s, b = _row(results, "sluice", n, pad), _row(results, "thread_per_source", n, pad)
            if s and b:
                w(f"| {n:,} | {_record_size(s):,.0f} | {_ratio(s['gb_per_second'], b['gb_per_second']):.2f}× | "
                  f"{_ratio(b['cpu_seconds_per_gb'], s['cpu_seconds_per_gb']):.2f}× | "
                  f"{_ratio(b['start_seconds'], s['start_seconds']):.1f}× | "
                  f"{_ratio(b['threads_max'], s['threads_max']):.0f}× |")
    w("")
    w("![threads](plots/threads.png) ![memory](plots/memory.png)\n")
    w("![throughput](plots/throughput.png) ![start](plots/start.png)\n")

    w("## Light-load latency (send to pipeline)\n")
    w("About 20,000 records/s in total spread over the sources; each record carries its send time "
      "(CLOCK_MONOTONIC) and the sink subtracts it. Flush timeout 50 ms.\n")
    w("| sources | runner | demand flush | records | p50 (ms) | p99 (ms) | max (ms) |")
    w("| ---: | --- | --- | ---: | ---: | ---: | ---: |")
    for r in sorted(results["latency"], key=lambda r: (r["sources"], r["mode"], not r["demand_flush"])):
        flush = ("n/a (emits after every read)" if r["mode"] != "sluice"
                 else "on" if r["demand_flush"] else "off (timeout only)")
        w(f"| {r['sources']:,} | {r['mode']} | {flush} | {r['records']:,} | "
          f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['max_ms']:.3f} |")
    w("")
    w("![latency](plots/latency.png)\n")

    w("## Simulator speed\n")
    w("| sources | events | wall (s) | events/s | virtual / wall |")
    w("| ---: | ---: | ---: | ---: | ---: |")
    for r in results["sim"]:
        if r.get("ok"):
            w(f"| {r['sources']:,} | {r['events']:,} | {r['wall_seconds']:.3f} | {r['events_per_second']:,.0f} | "
              f"{r['virtual_per_wall']:.2f} |")
    w("")

    if results["micro"]:
        w("## Microbenchmarks (Google Benchmark, real time)\n")
        w("| benchmark | ns per iteration | bytes/s | items or records/s |")
        w("| --- | ---: | ---: | ---: |")
        for b in results["micro"]:
            if b.get("run_type", "iteration") != "iteration":
                continue
            ns = b["real_time"] * {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[b.get("time_unit", "ns")]
            bps = b.get("bytes_per_second")
            rate = b.get("records/s") or b.get("items_per_second")
            w(f"| {b['name']} | {ns:,.1f} | {bps / 1e9:.2f} G | " if bps else f"| {b['name']} | {ns:,.1f} | | ")
            out[-1] += (f"{rate / 1e6:.1f} M |" if rate else " |")
        w("")
    return "\n".join(out) + "\n"
