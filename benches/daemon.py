#!/usr/bin/env python3
"""Daemon footprint: `python3 benches/daemon.py`, after
`cargo build --release && cargo build --profile dist --no-default-features`.

Starts the simulated Dataverse (100 rows) and IIS as processes over loopback HTTPS (from the
developer build, target/release/izrelay), then `izrelay run` of the binary the package ships
(target/dist/izrelay: profile `dist`, no simulators; `DAEMON_BIN=path` to measure another)
against them with the shipped example config, and measures:

- start-up to first pull: from spawning `izrelay run` to the log line of its first completed
  Dataverse pull (the JSON log's timestamp, in the same clock as the spawn time);
- idle RSS (VmRSS) once the backlog is sent and synced and the loops are idle;
- idle CPU over 60 s (utime + stime from /proc, as a share of one core);
- the daemon binary's size, as built and stripped.

The daemon runs with the `Environment=` settings of packaging/izrelay.service that concern the
process rather than izrelay (MALLOC_ARENA_MAX), as systemd would start it; `UNIT_ENV=0` runs it
without them.

Figures go in BENCHMARKS.md. Linux only (/proc).
"""

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "izrelay")
DAEMON_BIN = os.environ.get("DAEMON_BIN", os.path.join(ROOT, "target", "dist", "izrelay"))
SET = "msemr_medicationadministrations"
IDLE_SECS = int(os.environ.get("IDLE_SECS", "60"))


def row(i):
    return {
        "msemr_medicationadministrationid": f"00000000-0000-4000-8000-{i:012d}",
        "msemr_status": 935000002, "izr_generatehl7": False, "izr_ndc": "00069-2432-01",
        "izr_lotnumber": f"LOT{i}", "izr_lotexpiration": "2027-03-31", "izr_doseml": 0.3,
        "izr_dosenumber": 1, "msemr_effectivedatetime": "2026-11-20T09:30:00Z",
        "izr_vfceligibility": "V01", "izr_fundingsource": "VXC50",
        "izr_visdocument": "253088698300063911250131", "izr_visvaccinetype": None,
        "izr_vispublished": "2025-01-31", "izr_vispresented": "2026-11-20",
        "msemr_perfomeronbehalfof": {"accountnumber": "PRV-001"},
        "msemr_subjecttypepatient": {"msemr_medicalrecordnumber": f"MRN-{i}", "lastname": "Doe",
                                     "firstname": "Jane", "birthdate": "1980-02-29", "gendercode": 2},
        "msemr_medicationreferencenew": {"izr_cvx": "309", "izr_mvx": "PFR"},
        "msemr_dosageroute": {"msemr_code": "C28161"}, "msemr_dosagesite": {"msemr_code": "LD"},
        "izr_location": {"msemr_locationnumber": "FAC-17", "msemr_name": "Elm Street Clinic"},
        "izr_vaccinator": {"msemr_qualification1identifier": "1234567893", "lastname": "Lee",
                           "firstname": "Ana"},
    }


def start_sim(args):
    p = subprocess.Popen([BIN, "sim", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    line = p.stdout.readline()
    return p, line.strip().rsplit(" ", 1)[-1]


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, clock ticks


def rss_kib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_split(pid, binary):
    """(KiB of the binary's own mappings, of other files (libc...), anonymous) from smaps."""
    own = files = anon = 0
    path = None
    binary = os.path.realpath(binary)
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
                path = head[5] if len(head) > 5 else None
            elif head[0] == "Rss:":
                kib = int(head[1])
                if path == binary:
                    own += kib
                elif path and path.startswith("/"):
                    files += kib
                else:
                    anon += kib
    return own, files, anon


def unit_environment():
    """The unit's Environment= pairs that are not izrelay's own settings (paths come from the
    benchmark): what systemd would give the process."""
    pairs = {}
    with open(os.path.join(ROOT, "packaging", "izrelay.service")) as f:
        for line in f:
            if line.startswith("Environment="):
                key, _, value = line.strip().split("=", 1)[1].partition("=")
                if not key.startswith("IZRELAY_"):
                    pairs[key] = value
    return pairs


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def metric(addr, name):
    text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total, text


def prepare(d, iis_url, dv_url, changes=(), binary=BIN):
    """Writes the shipped example config pointed at both simulators (with `changes`, pairs of
    text to replace), imports the IIS credentials and the Dataverse secret; returns the
    command prefix and the environment for izrelay."""
    with open(os.path.join(ROOT, "packaging", "config.example.toml")) as f:
        config = f.read()
    for old, new in (
        ('# ca_file = "/etc/izrelay/state-iis-ca.pem"', f'ca_file = "{d}/iis-ca.pem"'),
        ('# url = "https://contoso.crm.dynamics.com"',
         f'url = "{dv_url}"\ntenant_id = "sim-tenant"\nclient_id = "sim-client"\n'
         f'token_url = "{dv_url}/sim-tenant/oauth2/v2.0/token"\nca_file = "{d}/dv-ca.pem"'),
        ('# metrics_listen = "127.0.0.1:9464"', 'metrics_listen = "127.0.0.1:0"'),
        *changes,
    ):
        config = config.replace(old, new)
    cfg = os.path.join(d, "config.toml")
    with open(cfg, "w") as f:
        f.write(config)
    settings = os.path.join(d, "Settings.xml")
    with open(settings, "w") as f:
        f.write(f'<Settings><setting providerId="PRV-001"><value name="userName">clinic-17</value>'
                f'<value name="password">Pw-1</value><value name="iisEndpoint">{iis_url}</value>'
                f'<value name="facilityId">FAC-17</value></setting></Settings>')
    base = [binary, "--config", cfg, "--data-dir", os.path.join(d, "data")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IZRELAY_") and k != "RUST_LOG"}
    subprocess.run([*base, "credentials", "import", settings], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([*base, "credentials", "dataverse-secret"], check=True,
                   env={**env, "IZRELAY_DATAVERSE_SECRET": "sim-secret"},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return base, env


def cleanup(procs, d):
    """Kills what is still running of `procs` and removes the scratch directory `d`."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    shutil.rmtree(d, ignore_errors=True)


def main():
    for path, build in ((BIN, "cargo build --release"),
                        (DAEMON_BIN, "cargo build --profile dist --no-default-features")):
        if not os.path.exists(path):
            sys.exit(f"build first: {build} (no {path})")
    d = tempfile.mkdtemp(prefix="izrelay-bench-")
    procs = []
    try:
        rows = os.path.join(d, "rows.json")
        with open(rows, "w") as f:
            json.dump([row(i) for i in range(100)], f)
        iis, iis_url = start_sim(["iis", "--listen", "127.0.0.1:0", "--tls", "--cert-out",
                                  os.path.join(d, "iis-ca.pem"), "--account", "clinic-17:Pw-1:FAC-17"])
        procs.append(iis)
        dv, dv_url = start_sim(["dataverse", "--listen", "127.0.0.1:0", "--tls", "--cert-out",
                                os.path.join(d, "dv-ca.pem"), "--table",
                                f"{SET}:msemr_medicationadministration:msemr_medicationadministrationid:tracked",
                                "--table", "izr_notificationlogs:izr_notificationlog:izr_notificationlogid",
                                "--seed-file", f"{SET}={rows}"])
        procs.append(dv)
        base, env = prepare(d, iis_url, dv_url, binary=DAEMON_BIN)
        unit_env = unit_environment() if os.environ.get("UNIT_ENV", "1") != "0" else {}
        env = {**env, **unit_env}
        print(f"daemon: {os.path.relpath(DAEMON_BIN, ROOT)}, environment from the unit: "
              f"{' '.join(f'{k}={v}' for k, v in unit_env.items()) or 'none'}")
        log_path = os.path.join(d, "daemon.log")
        listen = os.path.join(d, "listen")
        with open(log_path, "w") as log:
            spawned = time.time()
            run = subprocess.Popen([*base, "--log-format", "json", "run", "--listen-file", listen],
                                   stdout=subprocess.DEVNULL, stderr=log, env=env)
        procs.append(run)
        first_pull = None
        while first_pull is None and time.time() - spawned < 30:
            with open(log_path) as f:
                for line in f:
                    e = json.loads(line)
                    if e.get("message") == "pulled from dataverse":
                        t = datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
                        first_pull = t.timestamp() - spawned
                        break
            time.sleep(0.005)
        addr = open(listen).read().strip()
        deadline = time.time() + 60
        while True:
            accepted, _ = metric(addr, "izrelay_messages")
            backlog, _ = metric(addr, "izrelay_dataverse_sync_backlog")
            if accepted >= 100 and backlog == 0:
                break
            if time.time() > deadline:
                sys.exit("backlog not drained in 60 s")
            time.sleep(0.2)
        time.sleep(3)  # let the loops settle into idle
        rss_start = rss_kib(run.pid)
        anon, file_backed = rss_kib(run.pid, "RssAnon"), rss_kib(run.pid, "RssFile")
        threads = rss_kib(run.pid, "Threads")
        own, libs, anon_maps = rss_split(run.pid, DAEMON_BIN)
        fds_start = fds(run.pid)
        ticks0 = proc_stat(run.pid)
        t0 = time.time()
        time.sleep(IDLE_SECS)
        ticks1 = proc_stat(run.pid)
        elapsed = time.time() - t0
        cpu = (ticks1 - ticks0) / os.sysconf("SC_CLK_TCK") / elapsed * 100
        rss_end = rss_kib(run.pid)
        run.send_signal(signal.SIGTERM)
        stop0 = time.time()
        code = run.wait(timeout=30)
        stopped = time.time() - stop0
        size = os.path.getsize(DAEMON_BIN)
        stripped = os.path.join(d, "izrelay.stripped")
        shutil.copy(DAEMON_BIN, stripped)
        subprocess.run(["strip", stripped], check=False)
        print(f"start-up to first pull (100 rows over HTTPS): {first_pull * 1000:.0f} ms")
        print(f"idle RSS after draining 100 messages: {rss_start / 1024:.1f} MiB "
              f"(after {IDLE_SECS} s more: {rss_end / 1024:.1f} MiB): {anon / 1024:.1f} MiB anonymous, "
              f"{file_backed / 1024:.1f} MiB file-backed (code); {threads} threads, {fds_start} open fds")
        print(f"  by mapping: {own / 1024:.1f} MiB the izrelay binary (code, read-only data, relocated "
              f"data), {libs / 1024:.1f} MiB shared libraries, {anon_maps / 1024:.1f} MiB heap and stacks")
        print(f"idle CPU over {elapsed:.0f} s: {cpu:.3f} % of one core "
              f"({ticks1 - ticks0} ticks of 1/{os.sysconf('SC_CLK_TCK')} s)")
        print(f"SIGTERM to exit: {stopped * 1000:.0f} ms (exit code {code})")
        print(f"daemon binary ({os.path.relpath(DAEMON_BIN, ROOT)}): {size / 1e6:.1f} MB as built, "
              f"{os.path.getsize(stripped) / 1e6:.1f} MB stripped")
    finally:
        cleanup(procs, d)


if __name__ == "__main__":
    main()
