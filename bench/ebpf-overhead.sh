#!/usr/bin/env bash
# Kernel-side cost of Vantage's eBPF programs against Debian's libbpf-tools
# (runqlat + biolatency), measured the same way in one run:
#   - with kernel.bpf_stats_enabled=1, each program's run_time_ns / run_cnt
#     (what `bpftool prog show` reports) over the workload rounds;
#   - the programs' share of the workload's CPU time;
#   - the workload's median wall time over ROUNDS rounds without and with
#     each tool loaded.
# The workload: `perf bench sched messaging -g 10 -l 100`, a direct-I/O read
# loop on a loop device and a loopback TCP request loop, one after the other
# in each round, so that the scheduler programs' share can also be given
# against the scheduler load alone (how the issue calibrates runqlat's cost)
# and the block programs' against the I/O load alone.
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

PHASES = ("sched", "io", "tcp")

def phase_cmd(phase):
    return {
        "sched": ["perf", "bench", "sched", "messaging", "-g", "10", "-l", "100"],
        "io": ["dd", f"if={loopdev}", "of=/dev/null", "bs=4096", "count=4000", "iflag=direct"],
        "tcp": ["python3", "-c", TCP_LOOP],
    }[phase]

def run_phase(phase):
    """Runs one load alone; (wall seconds, CPU seconds of the load's processes)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    p = subprocess.Popen(phase_cmd(phase), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if p.wait() != 0:
        sys.exit(f"workload command failed: {p.args}")
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

def workload():
    """The three loads one after the other (so each program's cost can be
    set against the load that drives it); (wall s, CPU s) of the round."""
    wall = cpu = 0.0
    for phase in PHASES:
        w, c = run_phase(phase)
        wall += w; cpu += c
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

def prog_delta(ids, before, after):
    """(name, runs, ns) per program in `ids` between two snapshots."""
    rows = []
    for i in sorted(ids):
        a, b = after.get(i, {}), before.get(i, {})
        rows.append((a.get("name", "?"), a.get("run_cnt", 0) - b.get("run_cnt", 0), a.get("run_time_ns", 0) - b.get("run_time_ns", 0)))
    return rows

def measure(label, start_tool, want_progs):
    known = set(progs())
    tool = start_tool() if start_tool else None
    ids = wait_new_progs(known, want_progs) if tool else {}
    walls, cpu = [], 0.0
    # Per phase: CPU of the load, and per program (runs, ns) while it ran.
    phases = {ph: {"cpu": 0.0, "progs": {}} for ph in PHASES}
    totals = {}
    for _ in range(rounds):
        round_wall = 0.0
        for phase in PHASES:
            before = progs()
            w, c = run_phase(phase)
            after = progs()
            round_wall += w; cpu += c
            phases[phase]["cpu"] += c
            for name, cnt, ns in prog_delta(ids, before, after):
                for acc in (phases[phase]["progs"], totals):
                    r = acc.setdefault(name, [0, 0])
                    r[0] += cnt; r[1] += ns
        walls.append(round_wall)
    if tool:
        tool.send_signal(signal.SIGINT)
        try:
            tool.wait(10)
        except subprocess.TimeoutExpired:
            tool.kill(); tool.wait()
    rows = [(name, c, n) for name, (c, n) in sorted(totals.items())]
    return {"label": label, "walls": walls, "cpu": cpu, "rows": rows, "prog_ns": sum(n for _, _, n in rows), "phases": phases}

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
print(f"workload, one load after the other: perf bench sched messaging -g 10 -l 100; {4000} direct 4 KiB reads on {loopdev}; 200x10 loopback TCP requests; {rounds} rounds per mode")
print("workload CPU = user + system time of the load's processes (a program runs in the kernel on behalf of the task that hit the hook, so its time is inside that figure)")
AREAS = (("scheduler", "sched_", "sched"), ("block", "block_", "io"))
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
        for area, prefix, own in AREAS:
            rows = [(c, n) for name, c, n in r["rows"] if name.startswith(prefix)]
            cnt, ns = sum(c for c, _ in rows), sum(n for _, n in rows)
            share = 100.0 * ns / (r["cpu"] * 1e9) if r["cpu"] else 0.0
            ph = r["phases"][own]
            own_ns = sum(n for name, (c, n) in ph["progs"].items() if name.startswith(prefix))
            own_share = 100.0 * own_ns / (ph["cpu"] * 1e9) if ph["cpu"] else 0.0
            print(f"   {area + ' (weighted)':<18} {cnt:>10} {ns / cnt if cnt else 0:>8.0f}   {share:.3f} % of the whole workload's CPU; {own_share:.3f} % of its own load's CPU ({own} phase)")
PY
