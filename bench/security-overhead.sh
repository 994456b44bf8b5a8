#!/usr/bin/env bash
# Kernel-side cost of Vantage's security programs: with
# kernel.bpf_stats_enabled=1, each program's run_time_ns / run_cnt (what
# `bpftool prog show` reports) while ROUNDS rounds of 500 execs of
# /bin/true and 200 loopback TCP connections run, and the programs' share
# of that workload's CPU time. The agent runs with [security] on, no rate
# limit, and a Loki nobody answers (events are read and counted either way).
# Beside them, the same rounds measure an empty program (r0 = 0; exit) on
# each of their hooks, loaded through the bpf() syscall: the hook's own
# dispatch cost, which no program on it can go below.
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
import ctypes, json, os, resource, socket, statistics, struct, subprocess, sys, tempfile, threading, time, urllib.request

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
    return {p["name"]: (p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in out if p.get("name", "").startswith(("security_", "empty_"))}

def agent_cpu():
    """The agent's user + system CPU time so far (s)."""
    fields = open(f"/proc/{agent.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

SETTLE = 0.5  # the agent drains the ring every 100 ms: let it finish a phase

def phase(run):
    """CPU of `run`'s processes and of the agent while it runs and settles (s)."""
    before, agent_before, own_before = resource.getrusage(resource.RUSAGE_CHILDREN), agent_cpu(), time.process_time()
    run()
    time.sleep(SETTLE)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    work = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) + time.process_time() - own_before
    return work, agent_cpu() - agent_before

def execs():
    subprocess.check_call(["/bin/sh", "-c", "i=0; while [ $i -lt 500 ]; do /bin/true; i=$((i+1)); done"])

def connects():
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(256)
    def serve():
        for _ in range(200):
            c, _ = srv.accept(); c.close()
    t = threading.Thread(target=serve); t.start()
    for _ in range(200):
        socket.create_connection(srv.getsockname()).close()
    t.join(); srv.close()

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS_BPF, BPF_PROG_LOAD, BPF_RAW_TRACEPOINT_OPEN = 321, 5, 17
BPF_PROG_TYPE_TRACING, BPF_TRACE_RAW_TP, BTF_KIND_TYPEDEF = 26, 23, 8

def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    fd = libc.syscall(SYS_BPF, cmd, buf, len(attr))
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"bpf({cmd})")
    return fd

def empty_program(name, tracepoint):
    """An empty tp_btf program attached to `tracepoint`; its fds, kept open."""
    libbpf = ctypes.CDLL("libbpf.so.1")
    libbpf.btf__load_vmlinux_btf.restype = ctypes.c_void_p
    libbpf.btf__find_by_name_kind.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]
    btf_id = libbpf.btf__find_by_name_kind(libbpf.btf__load_vmlinux_btf(), f"btf_trace_{tracepoint}".encode(), BTF_KIND_TYPEDEF)
    if btf_id <= 0:
        sys.exit(f"no BTF for tracepoint {tracepoint}")
    insns = ctypes.create_string_buffer(bytes.fromhex("b700000000000000" "9500000000000000"), 16)
    license = ctypes.create_string_buffer(b"GPL")
    attr = bytearray(128)  # union bpf_attr, BPF_PROG_LOAD part
    struct.pack_into("=IIQQ", attr, 0, BPF_PROG_TYPE_TRACING, 2, ctypes.addressof(insns), ctypes.addressof(license))
    attr[48:48 + len(name)] = name.encode()
    struct.pack_into("=I", attr, 68, BPF_TRACE_RAW_TP)
    struct.pack_into("=I", attr, 108, btf_id)
    prog = bpf(BPF_PROG_LOAD, attr)
    link = bpf(BPF_RAW_TRACEPOINT_OPEN, struct.pack("=QI4x", 0, prog))
    return prog, link

baselines = [empty_program("empty_exec", "sched_process_exec"), empty_program("empty_sock", "inet_sock_set_state")]

subprocess.check_call(["sysctl", "-q", "kernel.bpf_stats_enabled=1"])
agent = subprocess.Popen([vantage, "run", "--config", config], stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "vantage.log"), "w"))
try:
    deadline = time.time() + 30
    while 'vantage_ebpf_program_up{program="security_exec"} 1' not in metrics():
        if time.time() > deadline:
            sys.exit(f"security_exec not up; see {work}/vantage.log")
        time.sleep(0.2)
    per_round = {}
    cpu, agent_exec, agent_conn, idle = [], [], [], []
    for _ in range(rounds):
        before = programs()
        (exec_work, exec_agent), (conn_work, conn_agent) = phase(execs), phase(connects)
        after = programs()
        cpu.append(exec_work + conn_work)
        agent_exec.append(exec_agent)
        agent_conn.append(conn_agent)
        idle.append(phase(lambda: time.sleep(1))[1])
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
    ms = lambda xs: statistics.median(xs) * 1000
    print(f"agent CPU (median of rounds; each phase includes {SETTLE} s after it): "
          f"{ms(agent_exec):.0f} ms for 500 execs ({ms(agent_exec) * 2:.0f} us each), "
          f"{ms(agent_conn):.0f} ms for 200 connections (400 events: connect, accept, {ms(agent_conn) * 2.5:.0f} us each), "
          f"{ms(idle):.0f} ms idle over {1 + SETTLE} s")
finally:
    agent.terminate(); agent.wait()
    subprocess.call(["sysctl", "-q", "kernel.bpf_stats_enabled=0"])
PY
