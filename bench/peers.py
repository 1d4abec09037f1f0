"""rsyslog and syslog-ng as benchmark peers, driven by sluice-loadgen (used by run_bench.py).

Each peer runs as its own process on a configuration from bench/peers/ (rendered with a free
loopback port and a fresh work directory) and writes one byte per record it accepted to
<workdir>/records: the file's size is the peer's count of records, the proof that every record
arrived and the stop of the clock. What is measured, from the peer's own /proc entry:
  accept   the load generator connects N connections and holds them idle: time until the
           peer holds N more open files; threads; resident bytes per idle connection
  ingest   the connections send R records each flat out: time from the signal to send until
           the count reaches N x R; GB/s, records/s, the peer's CPU seconds per GB, threads
A run whose count is short after the deadline, or above N x R, is reported with verified false
and the count it reached; nothing is dropped from the results.

The peers are unpacked from Debian's packages by ci/deps into $SLUICE_PEERS_DIR
(/opt/sluice-peers): as packages they conflict (each is the system-log-daemon).
"""
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time

PEERS_DIR = os.environ.get("SLUICE_PEERS_DIR", "/opt/sluice-peers")
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers")
POLL_SECONDS = 0.005


def _rsyslog_argv(conf, workdir):
    root = os.path.join(PEERS_DIR, "rsyslog")
    return [os.path.join(root, "usr/sbin/rsyslogd"), "-n", "-iNONE", "-f", conf,
            "-M", os.path.join(root, "usr/lib/x86_64-linux-gnu/rsyslog")], {}


def _syslog_ng_argv(conf, workdir):
    root = os.path.join(PEERS_DIR, "syslog-ng-core")
    env = {"LD_LIBRARY_PATH": os.path.join(root, "usr/lib/syslog-ng")}
    return [os.path.join(root, "usr/sbin/syslog-ng"), "-F", "--no-caps", "-f", conf,
            "--module-path", os.path.join(root, "usr/lib/syslog-ng/3.38"),
            "--persist-file", os.path.join(workdir, "persist"),
            "--pidfile", os.path.join(workdir, "pid"),
            "--control", os.path.join(workdir, "ctl")], env


PEERS = {
    "rsyslog": ("rsyslog.conf", _rsyslog_argv, "usr/sbin/rsyslogd"),
    "syslog-ng": ("syslog-ng.conf", _syslog_ng_argv, "usr/sbin/syslog-ng"),
}
PEER_DIRS = {"rsyslog": "rsyslog", "syslog-ng": "syslog-ng-core"}


def available(name):
    """Empty when the peer can run here; otherwise why not (and the fix)."""
    binary = os.path.join(PEERS_DIR, PEER_DIRS[name], PEERS[name][2])
    if not os.access(binary, os.X_OK):
        return f"{binary} is missing: run ci/deps (it unpacks the Debian package there)"
    return ""


def free_port():
    """A free loopback port (run_bench.py uses it too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _raise_open_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _open_files(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def _size(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _wait(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(POLL_SECONDS)
    return predicate()


def _read(path):
    with open(path, errors="replace") as f:
        return f.read()


class _Peer:
    """One peer process on a rendered configuration; stopped (and its files removed) on exit."""

    def __init__(self, name, connections):
        self.name = name
        self.workdir = tempfile.mkdtemp(prefix=f"sluice-peer-{name}-")
        self.port = free_port()
        conf_name, argv_of, _ = PEERS[name]
        text = _read(os.path.join(CONFIG_DIR, conf_name))
        # syslog-ng's window must cover every connection's fetch limit, or it warns and pauses.
        window = max(100_000, connections * 1000)
        for key, value in (("@PORT@", self.port), ("@WORKDIR@", self.workdir),
                           ("@CONNECTIONS@", connections + 16), ("@WINDOW@", window)):
            text = text.replace(key, str(value))
        conf = os.path.join(self.workdir, conf_name)
        with open(conf, "w") as f:
            f.write(text)
        argv, env = argv_of(conf, self.workdir)
        self.records = os.path.join(self.workdir, "records")
        self.log = os.path.join(self.workdir, "peer.log")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **env}, preexec_fn=_raise_open_files)

    def listening(self):
        """True once the port accepts; the probe sends nothing (no record)."""
        def probe():
            if self.proc.poll() is not None:
                return True
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False
        return _wait(probe, 30) and self.proc.poll() is None

    def log_tail(self):
        return _read(self.log)[-1500:]

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def run(name, loadgen, connections, records_each, pad_bytes, chunk_bytes, deadline_seconds=600,
        expect_extra=0):
    """One measurement of a peer; a dict like sluice-ingest-bench's JSON line. expect_extra
    (the self-test's) waits for that many records more than are sent: the run must come out
    not verified, with the count it reached."""
    row = {"measure": "peer", "mode": name, "sources": connections, "pad_bytes": pad_bytes,
           "records_each": records_each, "verified": False, "problems": []}
    why = available(name)
    if why:
        row["problems"].append(why)
        return row
    expected = connections * records_each + expect_extra
    peer = _Peer(name, connections)
    load = None
    load_out = os.path.join(peer.workdir, "loadgen.out")
    try:
        if not peer.listening():
            row["problems"].append(f"{name} did not listen: {peer.log_tail()}")
            return row
        time.sleep(0.3)  # let the probe's connection close
        pid = peer.proc.pid
        rss0, threads0, files0 = _proc_status(pid, "VmRSS"), _proc_status(pid, "Threads"), _open_files(pid)
        with open(load_out, "w") as out:
            load = subprocess.Popen([loadgen, "--port", str(peer.port), "--connections", str(connections),
                                     "--records", str(records_each), "--id-base", "0",
                                     "--pad-bytes", str(pad_bytes), "--chunk-bytes", str(chunk_bytes),
                                     "--hold"], stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=_raise_open_files)
        if not _wait(lambda: '"rendered"' in _read(load_out), 120):
            row["problems"].append(f"the load generator did not render its records: {_read(load_out)[-500:]}")
            return row
        t_accept = time.monotonic()
        accepted = _wait(lambda: _open_files(pid) >= files0 + connections, 120)
        row["accept_seconds"] = round(time.monotonic() - t_accept, 6)
        if not accepted or not _wait(lambda: '"connected"' in _read(load_out), 60):
            row["problems"].append(f"{name} held {_open_files(pid) - files0} of {connections} connections")
            return row
        time.sleep(0.3)  # let the idle state settle, as sluice-ingest-bench does
        rss_idle = _proc_status(pid, "VmRSS")
        row["threads_idle"] = _proc_status(pid, "Threads")
        row["threads_before"] = threads0
        row["rss_per_idle_source_bytes"] = round(max(0, rss_idle - rss0) * 1024 / connections, 1)

        threads_max = row["threads_idle"]
        cpu0 = _cpu_seconds(pid)
        t_go = time.monotonic()
        load.send_signal(signal.SIGUSR1)
        polls = 0

        def counted():
            nonlocal threads_max, polls
            polls += 1
            if polls % 10 == 0:
                threads_max = max(threads_max, _proc_status(pid, "Threads"))
            return _size(peer.records) >= expected or peer.proc.poll() is not None

        done = _wait(counted, deadline_seconds)
        t_done = time.monotonic()
        cpu = _cpu_seconds(pid) - cpu0
        load_rc = load.wait(60)
        report = _read(load_out)
        bytes_sent = 0
        for line in report.splitlines():
            if '"bytes_sent"' in line:
                bytes_sent = int(json.loads(line)["bytes_sent"])
        time.sleep(0.2)  # a count above N x R would show now
        count = _size(peer.records)
        seconds = t_done - t_go
        gb = bytes_sent / 1e9
        row.update({"bytes_sent": bytes_sent, "records_expected": expected, "records_counted": count,
                    "ingest_seconds": round(seconds, 6), "threads_max": threads_max,
                    "gb_per_second": round(gb / seconds, 4) if done and seconds > 0 else 0.0,
                    "records_per_second": round(expected / seconds) if done and seconds > 0 else 0,
                    "cpu_seconds": round(cpu, 3),
                    "cpu_seconds_per_gb": round(cpu / gb, 3) if gb > 0 else 0.0})
        if load_rc != 0:
            row["problems"].append(f"loadgen exit {load_rc}: {report[-300:]}")
        if peer.proc.poll() is not None:
            row["problems"].append(f"{name} exited {peer.proc.returncode}: {peer.log_tail()}")
        if count != expected:
            row["problems"].append(f"{name} counted {count} of {expected} records"
                                   + ("" if done else f" after {deadline_seconds} s"))
        row["verified"] = not row["problems"]
        return row
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait()
        peer.close()


def summary(rows):
    """One row for a peer's repeats: the run with the median throughput among those verified
    (among all when none was), with the medians of accept time, idle memory and CPU per GB;
    verified_runs says how many counted every record, and every problem seen is kept."""
    verified = [r for r in rows if r["verified"]]
    pool = verified or rows
    row = dict(sorted(pool, key=lambda r: r.get("gb_per_second", 0.0))[len(pool) // 2])
    for key in ("accept_seconds", "rss_per_idle_source_bytes", "cpu_seconds_per_gb"):
        values = sorted(r[key] for r in pool if key in r)
        if values:
            row[key] = values[len(values) // 2]
    row["repeats"] = len(rows)
    row["verified_runs"] = len(verified)
    row["problems"] = [p for r in rows for p in r["problems"]]
    return row
