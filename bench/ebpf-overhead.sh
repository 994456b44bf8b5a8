#!/usr/bin/env bash
# Kernel-side cost of Vantage's eBPF programs against Debian's libbpf-tools
# (runqlat + biolatency), measured the same way in one run:
#   - with kernel.bpf_stats_enabled=1, each program's run_time_ns / run_cnt
#     (what `bpftool prog show` reports) over the workload rounds;
#   - the programs' share of the workload's CPU time;
#   - the workload's median wall time over ROUNDS rounds without and with
#     each tool loaded.
# The workload: `perf bench sched messaging -g 10 -l 100`, a direct-I/O read
# loop on a loop device and a loopback TCP request loop, run together.
#
# Usage (root): bench/ebpf-overhead.sh [ROUNDS]   (default 5)
# Needs: linux-perf, bpftool, libbpf-tools, python3, and `cargo build -p vantage`
# (VANTAGE=path overrides the binary).
set -euo pipefail
ROUNDS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VANTAGE=${VANTAGE:-$ROOT/target/debug/vantage}
for p in perf bpftool python3 losetup /usr/sbin/runqlat /usr/sbin/biolatency "$VANTAGE"; do
    command -v "$p" >/dev/null || { echo "missing $p (packages: linux-perf bpftool libbpf-tools python3; cargo build -p vantage)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
exec python3 - "$ROUNDS" "$VANTAGE" <<'PY'
import json, os, resource, signal, statistics, subprocess, sys, tempfile, time

rounds, vantage = int(sys.argv[1]), sys.argv[2]
work = tempfile.mkdtemp(prefix="ebpf-bench-")
img = os.path.join(work, "disk.img")
with open(img, "wb") as f:
    f.truncate(64 << 20)
loopdev = subprocess.check_output(["losetup", "--find", "--show", "--direct-io=on", img], text=True).strip()

TCP_LOOP = r'''
import socket, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(128)
port = srv.getsockname()[1]
def serve():
    while True:
        c, _ = srv.accept()
        with c:
            while True:
                d = c.recv(64)
                if not d: break
                c.sendall(d)
threading.Thread(target=serve, daemon=True).start()
for _ in range(200):
    s = socket.create_connection(("127.0.0.1", port))
    for _ in range(10):
        s.sendall(b"ping"); s.recv(64)
    s.close()
'''

def workload():
    """Runs the three loads together; (wall seconds, CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    procs = [
        subprocess.Popen(["perf", "bench", "sched", "messaging", "-g", "10", "-l", "100"], stdout=subprocess.DEVNULL),
        subprocess.Popen(["dd", f"if={loopdev}", "of=/dev/null", "bs=4096", "count=4000", "iflag=direct"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(["python3", "-c", TCP_LOOP]),
    ]
    for p in procs:
        if p.wait() != 0:
            sys.exit(f"workload command failed: {p.args}")
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu

def progs():
    return {p["id"]: p for p in json.loads(subprocess.check_output(["bpftool", "prog", "show", "--json"]))}

def wait_new_progs(known, want, limit=30):
    deadline = time.time() + limit
    while time.time() < deadline:
        new = {i: p for i, p in progs().items() if i not in known}
        if len(new) >= want:
            time.sleep(0.5)
            return {i: p for i, p in progs().items() if i not in known}
        time.sleep(0.2)
    sys.exit(f"expected {want} new BPF programs within {limit}s")

def measure(label, start_tool, want_progs):
    known = set(progs())
    tool = start_tool() if start_tool else None
    ids = wait_new_progs(known, want_progs) if tool else {}
    before = progs()
    walls, cpus = [], []
    for _ in range(rounds):
        w, c = workload()
        walls.append(w); cpus.append(c)
    after = progs()
    if tool:
        tool.send_signal(signal.SIGINT)
        try:
            tool.wait(10)
        except subprocess.TimeoutExpired:
            tool.kill(); tool.wait()
    rows, total_ns = [], 0
    for i in sorted(ids):
        a, b = after.get(i, {}), before.get(i, {})
        ns = a.get("run_time_ns", 0) - b.get("run_time_ns", 0)
        cnt = a.get("run_cnt", 0) - b.get("run_cnt", 0)
        total_ns += ns
        rows.append((a.get("name", "?"), cnt, ns))
    return {"label": label, "walls": walls, "cpu": sum(cpus), "rows": rows, "prog_ns": total_ns}

def vantage_tool():
    cfg = os.path.join(work, "vantage.toml")
    with open(cfg, "w") as f:
        f.write('[agent]\nlisten_addr = "127.0.0.1:0"\n[node]\nenabled = false\n[docker]\nenabled = false\n[ebpf]\ninterval = "15s"\n')
    return subprocess.Popen([vantage, "run", "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def libbpf_tools():
    # Both tools at once: runqlat is the scheduler peer, biolatency the block one.
    rq = subprocess.Popen(["/usr/sbin/runqlat", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bio = subprocess.Popen(["/usr/sbin/biolatency", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    class Both:
        def send_signal(self, s):
            rq.send_signal(s); bio.send_signal(s)
        def wait(self, t):
            rq.wait(t); bio.wait(t)
        def kill(self):
            rq.kill(); bio.kill()
    return Both()

old = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
open("/proc/sys/kernel/bpf_stats_enabled", "w").write("1")
try:
    workload()  # warm caches once
    results = [
        measure("none", None, 0),
        measure("vantage", vantage_tool, 10),
        measure("libbpf-tools (runqlat + biolatency)", libbpf_tools, 5),
    ]
finally:
    open("/proc/sys/kernel/bpf_stats_enabled", "w").write(old)
    subprocess.run(["losetup", "-d", loopdev])

base = statistics.median(results[0]["walls"])
print(f"workload: perf bench sched messaging -g 10 -l 100 + {4000} direct 4 KiB reads on {loopdev} + 200x10 loopback TCP requests; {rounds} rounds per mode")
for r in results:
    med = statistics.median(r["walls"])
    share = 100.0 * r["prog_ns"] / (r["cpu"] * 1e9) if r["cpu"] else 0.0
    print(f"\n== {r['label']}: median wall {med:.3f} s ({100*(med/base-1):+.1f} % vs none), workload CPU {r['cpu']:.2f} s, programs {r['prog_ns']/1e9:.4f} s = {share:.3f} % of workload CPU")
    if r["rows"]:
        print(f"   {'program':<18} {'runs':>10} {'ns/run':>8}")
        tot_cnt = sum(c for _, c, _ in r["rows"]); tot_ns = sum(n for _, _, n in r["rows"])
        for name, cnt, ns in r["rows"]:
            print(f"   {name:<18} {cnt:>10} {ns / cnt if cnt else 0:>8.0f}")
        print(f"   {'all (weighted)':<18} {tot_cnt:>10} {tot_ns / tot_cnt if tot_cnt else 0:>8.0f}")
        for area, prefix in (("scheduler", "sched_"), ("block", "block_")):
            rows = [(c, n) for name, c, n in r["rows"] if name.startswith(prefix)]
            cnt, ns = sum(c for c, _ in rows), sum(n for _, n in rows)
            share = 100.0 * ns / (r["cpu"] * 1e9) if r["cpu"] else 0.0
            print(f"   {area + ' (weighted)':<18} {cnt:>10} {ns / cnt if cnt else 0:>8.0f}   {share:.3f} % of workload CPU")
PY
