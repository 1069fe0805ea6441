#!/usr/bin/env python3
"""Soak: `python3 benches/soak.py` (after `cargo build --release`); `SOAK_SECS=600` by default.

The release `izrelay run` runs against `izrelay sim iis` (20 % transient faults of every
retryable kind: HTTP 500/503/429/408, dropped connections, lost ACKs, UnknownFault, HTML pages,
garbage, ACK 207, slow answers; 20 ms latency) and `izrelay sim dataverse` (5 % 429s, 5 % 5xx;
500 seeded rows) as processes over loopback HTTPS. Records arrive at a steady rate by
`izrelay import` (a second process writing to the same database) for SOAK_SECS; then the feed
stops and the daemon is given time to drain and sync. Reported, as the issue asks:

- delivered: distinct doses the IIS accepted;
- lost (must be 0): records fed whose dose was never accepted by the IIS;
- duplicates with a new MSH-10 (must be 0): doses the IIS accepted under two control ids
  (a resend with the same MSH-10 after a lost ACK is expected and counted separately);
- RSS and open file descriptors of the daemon at start and at the end of the feed.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "izrelay")
SOAK_SECS = int(os.environ.get("SOAK_SECS", "600"))
RATE = int(os.environ.get("SOAK_RATE", "20"))  # records per second by import
SET = "msemr_medicationadministrations"
FAULTS = "http500,http503,http429,http408,drop,lost_ack,unknown_fault,html,garbage,ack207,slow"
sys.path.insert(0, os.path.join(ROOT, "benches"))
from daemon import row, start_sim, rss_kib, fds, metric, prepare, cleanup  # noqa: E402


def record(base, i):
    r = json.loads(json.dumps(base))
    r["vaccination_id"] = f"soak-{i:07d}"
    r["provider_id"] = "PRV-001"
    r["patient"]["id"] = f"S{i // 3:06d}"  # three doses per patient: FIFO matters
    return r


def main():
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    with open(os.path.join(ROOT, "tests/fixtures/records/11-adult-tdap-private-local-provider-id.json")) as f:
        base = json.load(f)
    d = tempfile.mkdtemp(prefix="izrelay-soak-")
    procs = []
    try:
        rows = os.path.join(d, "rows.json")
        with open(rows, "w") as f:
            json.dump([row(i) for i in range(500)], f)
        deliveries = os.path.join(d, "deliveries.ndjson")
        iis, iis_url = start_sim(["iis", "--listen", "127.0.0.1:0", "--tls", "--cert-out",
                                  os.path.join(d, "iis-ca.pem"), "--account", "clinic-17:Pw-1:FAC-17",
                                  "--fault-rate", "0.2", "--faults", FAULTS, "--latency-ms", "20",
                                  "--record", deliveries])
        procs.append(iis)
        dv, dv_url = start_sim(["dataverse", "--listen", "127.0.0.1:0", "--tls", "--cert-out",
                                os.path.join(d, "dv-ca.pem"), "--table",
                                f"{SET}:msemr_medicationadministration:msemr_medicationadministrationid:tracked",
                                "--table", "izr_notificationlogs:izr_notificationlog:izr_notificationlogid",
                                "--seed-file", f"{SET}={rows}", "--throttle-rate", "0.05",
                                "--retry-after-secs", "1", "--error-rate", "0.05"])
        procs.append(dv)
        base_cmd, env = prepare(d, iis_url, dv_url, (
            ("request_timeout_secs = 60", "request_timeout_secs = 5"),
            ("retry_base_ms = 30000", "retry_base_ms = 200"),
            ("retry_max_ms = 3600000", "retry_max_ms = 5000"),
            ("circuit_probe_ms = 60000", "circuit_probe_ms = 1000"),
            ("pull_interval_secs = 300", "pull_interval_secs = 10"),
            ("sync_interval_secs = 60", "sync_interval_secs = 5"),
        ))
        listen = os.path.join(d, "listen")
        with open(os.path.join(d, "daemon.log"), "w") as log:
            run = subprocess.Popen([*base_cmd, "--log-format", "json", "run", "--listen-file", listen],
                                   stdout=subprocess.DEVNULL, stderr=log, env=env)
        procs.append(run)
        while not os.path.exists(listen) or not open(listen).read().strip():
            time.sleep(0.05)
        addr = open(listen).read().strip()
        time.sleep(2)
        rss0, fds0 = rss_kib(run.pid), fds(run.pid)
        fed = 0
        start = time.time()
        batch = os.path.join(d, "batch.ndjson")
        samples = []  # (seconds, RSS KiB, anonymous KiB) once a minute
        next_sample = start
        while time.time() - start < SOAK_SECS:
            tick = time.time()
            if tick >= next_sample:
                samples.append((tick - start, rss_kib(run.pid), rss_kib(run.pid, "RssAnon")))
                next_sample += 60
            with open(batch, "w") as f:
                for _ in range(RATE):
                    f.write(json.dumps(record(base, fed)) + "\n")
                    fed += 1
            subprocess.run([*base_cmd, "import", batch], check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(max(0.0, 1.0 - (time.time() - tick)))
        rss1, fds1 = rss_kib(run.pid), fds(run.pid)
        feed_secs = time.time() - start
        deadline = time.time() + 300
        while True:
            text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=10).read().decode()
            waiting = sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                          if l.startswith("izrelay_messages{") and ('state="queued"' in l or 'state="sending"' in l))
            backlog, _ = metric(addr, "izrelay_dataverse_sync_backlog")
            if waiting == 0 and backlog == 0:
                break
            if time.time() > deadline:
                print(f"not drained 300 s after the feed: waiting {waiting}, sync backlog {backlog}")
                break
            time.sleep(1)
        drain_secs = time.time() - start - feed_secs
        run.send_signal(signal.SIGTERM)
        code = run.wait(timeout=60)
        accepted = {}
        for line in open(deliveries):
            e = json.loads(line)
            if e.get("op") == "submit" and e.get("outcome") in ("accepted", "accepted_with_warnings", "duplicate"):
                accepted.setdefault(e.get("vaccination_id"), set()).add(e.get("control_id"))
        fed_ids = {f"soak-{i:07d}" for i in range(fed)}
        dv_ids = {f"00000000-0000-4000-8000-{i:012d}" for i in range(500)}
        lost = len(fed_ids - accepted.keys()) + len(dv_ids - accepted.keys())
        dup_new = sum(1 for ids in accepted.values() if len(ids) > 1)
        resends = sum(1 for line in open(deliveries) if '"duplicate"' in line)
        print(f"soak {feed_secs:.0f} s at {RATE} records/s by import + 500 Dataverse rows; "
              f"drained and synced {drain_secs:.0f} s after the feed; daemon exit code {code}")
        print(f"fed {fed + 500}; delivered {len(accepted)}; lost {lost}; "
              f"duplicates with a new MSH-10 {dup_new}; resends recognised (same MSH-10) {resends}")
        print(f"RSS {rss0 / 1024:.1f} MiB at start, {rss1 / 1024:.1f} MiB at the end of the feed; "
              f"open fds {fds0} → {fds1}")
        print("RSS / anonymous by minute (MiB): " + ", ".join(
            f"{t / 60:.0f}: {r / 1024:.1f}/{a / 1024:.1f}" for t, r, a in samples))
    finally:
        cleanup(procs, d)


if __name__ == "__main__":
    main()
