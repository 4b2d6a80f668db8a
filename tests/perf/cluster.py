#!/usr/bin/env python3
"""Helpers for tests/perf/cluster.sh (standard library only).

  cluster.py snap LABEL=PID ...      one JSON line on stdout: CPU ticks of each process (its
                                     direct children added, for nginx's master) and of each of
                                     its threads by name, /proc/stat per core, MemAvailable
  cluster.py cpu A.json B.json       percent of one core per process and per thread between
                                     two snapshots, and each core's busy percent (JSON)
  cluster.py merge LINE KEY=JSON...  add fields to a JSON object line
  cluster.py rss PID ...             sum of VmRSS in bytes of the processes (children added)
  cluster.py table RESULTS.jsonl     the markdown tables of every part
"""
import json
import os
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def stat_fields(path):
    with open(path) as f:
        s = f.read()
    comm = s[s.index("(") + 1 : s.rindex(")")]
    rest = s[s.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): utime = field 14, stime = field 15, ppid = field 4.
    return comm, int(rest[1]), int(rest[11]) + int(rest[12])


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                _, ppid, _ = stat_fields(f"/proc/{d}/stat")
            except (OSError, ValueError):
                continue
            if ppid == pid:
                out.append(int(d))
    return out


def proc_ticks(pid):
    total, threads = 0, {}
    for p in [pid] + children(pid):
        try:
            _, _, t = stat_fields(f"/proc/{p}/stat")
        except OSError:
            continue
        total += t
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            tids = []
        for tid in tids:
            try:
                comm, _, tt = stat_fields(f"/proc/{p}/task/{tid}/stat")
            except OSError:
                continue
            key = comm if p == pid else f"child:{comm}"
            threads[key] = threads.get(key, 0) + tt
    return total, threads


def snap(args):
    out = {"t": time.monotonic(), "procs": {}, "cpus": {}}
    for a in args:
        label, pid = a.split("=", 1)
        total, threads = proc_ticks(int(pid))
        out["procs"][label] = {"pid": int(pid), "ticks": total, "threads": threads}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                out["cpus"][line.split()[0]] = [sum(v[:8]) - idle, sum(v[:8])]
    out["mem_available_kb"] = meminfo("MemAvailable")
    print(json.dumps(out))


def meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def cpu(a_path, b_path):
    a, b = json.load(open(a_path)), json.load(open(b_path))
    dt = b["t"] - a["t"]
    pct = lambda d: round(100.0 * d / HZ / dt, 1)
    out = {"window_s": round(dt, 2), "procs": {}, "threads": {}, "cores_busy_pct": {}}
    for label, pb in b["procs"].items():
        pa = a["procs"].get(label)
        if not pa:
            continue
        out["procs"][label] = pct(pb["ticks"] - pa["ticks"])
        th = {k: pct(v - pa["threads"].get(k, 0)) for k, v in pb["threads"].items()}
        out["threads"][label] = {k: v for k, v in sorted(th.items(), key=lambda kv: -kv[1]) if v >= 0.5}
    for c, (busy, total) in b["cpus"].items():
        ba, ta = a["cpus"].get(c, (0, 0))
        out["cores_busy_pct"][c] = round(100.0 * (busy - ba) / max(total - ta, 1), 1)
    print(json.dumps(out))


def merge(line, kvs):
    o = json.loads(line)
    for kv in kvs:
        k, v = kv.split("=", 1)
        try:
            o[k] = json.loads(v)
        except ValueError:
            o[k] = v
    print(json.dumps(o))


def rss(pids):
    total = 0
    for pid in pids:
        for p in [int(pid)] + children(int(pid)):
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
            except OSError:
                pass
    print(total)


def f(v, d=0):
    if v is None:
        return "-"
    if isinstance(v, (int, float)):
        return f"{v:,.{d}f}"
    return str(v)


def table(path):
    rows = [json.loads(l) for l in open(path) if l.strip().startswith("{")]
    by = {}
    for r in rows:
        by.setdefault(r.get("part", "?"), []).append(r)
    for part in sorted(by):
        print(f"\n### Part {part}\n")
        rs = by[part]
        if part == "4":
            for r in rs:
                if r.get("kind") == "reuse_port":
                    print("| processes | subscribers wanted | open at end | publishes | expected | delivered | lost | dup | p50 ms | p99 ms | box-wide B/conn (MemAvailable) | kernel slab B/conn | server RSS B/conn | generators' RSS B/conn | descriptors per server process | load avg |")
                    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
                    print("| " + " | ".join([f(r["procs"]), f(r["wanted"]), f(r["open"]), f(r["published"]),
                        f(r["expected"]), f(r["delivered"]), f(r["lost"]), f(r["duplicates"]),
                        f(r.get("p50_ms"), 2), f(r.get("p99_ms"), 2), f(r.get("box_bytes_per_conn")), f(r.get("slab_bytes_per_conn")),
                        f(r.get("server_rss_bytes_per_conn")), f(r.get("gen_rss_bytes_per_conn")),
                        " / ".join(str(x) for x in r.get("per_process", [])), r.get("loadavg", "-")]) + " |")
            continue
        print("| run | subs | pub/s | deliv/s | lost | dup | p50 ms | p99 ms | p99.9 ms | max ms | CPU % of a core (window) | cores busy % | load avg (machine busy before) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rs:
            c = r.get("cpu") or {}
            procs = ", ".join(f"{k} {v}" for k, v in (c.get("procs") or {}).items())
            cores = ", ".join(f"{k} {v}" for k, v in (c.get("cores_busy_pct") or {}).items())
            if r.get("kind") == "redis-benchmark":
                print("| " + " | ".join([r["label"], "-", f(r.get("rps")), "-", "-", "-", f(r.get("p50_ms"), 3), "-", "-", "-",
                    procs or "-", cores or "-", r.get("loadavg", "-")]) + " |")
                continue
            l = r.get("latency_ms", {})
            print("| " + " | ".join([r.get("label", ""), f(r.get("open_at_end")), f(r.get("publishes_per_s")),
                f(r.get("deliveries_per_s")), f(r.get("lost")), f(r.get("duplicates")), f(l.get("p50"), 2),
                f(l.get("p99"), 2), f(l.get("p99.9"), 2), f(l.get("max"), 2), procs or "-", cores or "-",
                r.get("loadavg", "-") + (f" ({r['busy_before_pct']}%)" if r.get("busy_before_pct") is not None else "")]) + " |")
        # Rounds of one kind (labels ending ", round N"): the median of each figure.
        kinds = {}
        for r in rs:
            lab = r.get("label", "")
            if ", round " in lab:
                kinds.setdefault(lab.rsplit(", round ", 1)[0], []).append(r)
        for k, group in kinds.items():
            def med(xs):
                xs = sorted(x for x in xs if x is not None)
                return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2 if xs else None
            p50 = med([g.get("latency_ms", {}).get("p50") for g in group])
            p99 = med([g.get("latency_ms", {}).get("p99") for g in group])
            print(f"\n{k}: median of {len(group)} rounds p50 {f(p50, 2)} ms, p99 {f(p99, 2)} ms "
                  f"(p99 per round: {', '.join(f(g.get('latency_ms', {}).get('p99'), 2) for g in group)})")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "snap":
        snap(args)
    elif cmd == "cpu":
        cpu(*args)
    elif cmd == "merge":
        merge(args[0], args[1:])
    elif cmd == "rss":
        rss(args)
    elif cmd == "table":
        table(args[0])
    else:
        sys.exit(f"cluster.py: unknown command {cmd}")
