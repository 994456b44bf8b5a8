#!/usr/bin/env bash
# Kernel-side cost of Vantage's security programs: with
# kernel.bpf_stats_enabled=1, each program's run_time_ns / run_cnt (what
# `bpftool prog show` reports) while ROUNDS rounds of 500 execs of
# /bin/true and 200 loopback TCP connections run, and the programs' share
# of that workload's CPU time. The agent runs with [security] on, no rate
# limit, and a Loki nobody answers (events are read and counted either way).
#
# Usage (root): bench/security-overhead.sh [ROUNDS]   (default 5)
# Needs: bpftool, python3, and `cargo build -p vantage` (VANTAGE=path
# overrides the binary).
set -euo pipefail
ROUNDS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VANTAGE=${VANTAGE:-$ROOT/target/debug/vantage}
for p in bpftool python3 "$VANTAGE"; do
    command -v "$p" >/dev/null || { echo "missing $p (packages: bpftool python3; cargo build -p vantage)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
exec python3 - "$ROUNDS" "$VANTAGE" <<'PY'
import json, os, resource, socket, statistics, subprocess, sys, tempfile, threading, time, urllib.request

rounds, vantage = int(sys.argv[1]), sys.argv[2]
work = tempfile.mkdtemp(prefix="security-bench-")
port = socket.socket(); port.bind(("127.0.0.1", 0)); listen = port.getsockname()[1]; port.close()
config = os.path.join(work, "vantage.toml")
with open(config, "w") as f:
    f.write(f'''[agent]
listen_addr = "127.0.0.1:{listen}"
data_dir = "{work}/data"
[node]
enabled = false
[ebpf]
enabled = false
[docker]
enabled = false
[loki]
url = "http://127.0.0.1:9/loki/api/v1/push"
[security]
enabled = true
rate_limit = 0
''')

def metrics():
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{listen}/metrics", timeout=2).read().decode()
    except OSError:
        return ""

def programs():
    out = json.loads(subprocess.check_output(["bpftool", "-j", "prog", "show"]))
    return {p["name"]: (p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in out if p.get("name", "").startswith("security_")}

def workload():
    """500 execs and 200 loopback connections; the CPU they took (s)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.check_call(["/bin/sh", "-c", "i=0; while [ $i -lt 500 ]; do /bin/true; i=$((i+1)); done"])
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(256)
    def serve():
        for _ in range(200):
            c, _ = srv.accept(); c.close()
    t = threading.Thread(target=serve); t.start()
    t0 = time.process_time()
    for _ in range(200):
        socket.create_connection(srv.getsockname()).close()
    own = time.process_time() - t0
    t.join(); srv.close()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) + own

subprocess.check_call(["sysctl", "-q", "kernel.bpf_stats_enabled=1"])
agent = subprocess.Popen([vantage, "run", "--config", config], stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "vantage.log"), "w"))
try:
    deadline = time.time() + 30
    while 'vantage_ebpf_program_up{program="security_exec"} 1' not in metrics():
        if time.time() > deadline:
            sys.exit(f"security_exec not up; see {work}/vantage.log")
        time.sleep(0.2)
    per_round = {}
    cpu = []
    for _ in range(rounds):
        before = programs()
        cpu.append(workload())
        after = programs()
        for name, (ns, cnt) in after.items():
            b = before.get(name, (0, 0))
            per_round.setdefault(name, []).append((ns - b[0], cnt - b[1]))
    print(f"{rounds} rounds of 500 execs + 200 loopback connections, median workload CPU {statistics.median(cpu)*1000:.0f} ms")
    print("| program | runs per round | ns/run (median of rounds) | share of the workload's CPU |")
    print("|---|---:|---:|---:|")
    for name in sorted(per_round):
        rows = per_round[name]
        runs = statistics.median(c for _, c in rows)
        ns = statistics.median(n / c for n, c in rows if c)  if any(c for _, c in rows) else 0
        share = statistics.median(n / 1e9 / w for (n, _), w in zip(rows, cpu)) * 100
        print(f"| {name} | {runs:.0f} | {ns:.0f} | {share:.3f} % |")
finally:
    agent.terminate(); agent.wait()
    subprocess.call(["sysctl", "-q", "kernel.bpf_stats_enabled=0"])
PY
