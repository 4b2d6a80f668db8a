#!/usr/bin/env python3
"""Helpers for tests/perf/cluster.sh (standard library only).

  cluster.py snap LABEL=PID ...      one JSON line on stdout: CPU ticks of each process (its
                                     direct children added, for nginx's master) and of each of
                                     its threads by name, /proc/stat per core, MemAvailable
  cluster.py cpu A.json B.json       percent of one core per process and per thread between
                                     two snapshots, and each core's busy percent (JSON)
  cluster.py merge LINE KEY=JSON...  add fields to a JSON object line
  cluster.py rss PID ...             sum of VmRSS in bytes of the processes (children added)
  cluster.py mem LABEL GROUP=PID,PID ...   one JSON line: MemAvailable, Slab (reclaimable and
                                     not), /proc/net/sockstat TCP (of this network namespace),
                                     and the summed RSS (children added) of each group of PIDs
  cluster.py watch SECS PID ...      until every PID has exited (at most SECS): the lowest
                                     MemAvailable and the highest sockstat TCP mem, every 0.25 s
  cluster.py p5sum MEM.jsonl GENS.jsonl KEY=JSON...   part 5's result line: the generators'
                                     summaries summed per transport, and memory per connection
                                     for each stage (ws, then sse, then longpoll opened)
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
    print(rss_of(pids))


def rss_of(pids):
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
    return total


def sockstat_tcp():
    """TCP line of /proc/net/sockstat (this process's network namespace) as a dict."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                v = line.split()[1:]
                return {v[i]: int(v[i + 1]) for i in range(0, len(v) - 1, 2)}
    return {}


def slab_caches():
    """Bytes held by each slab cache (its slabs' pages), from /proc/slabinfo (root only)."""
    out = {}
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                if line.startswith(("slabinfo", "#")):
                    continue
                v = line.split()
                # name active_objs num_objs objsize objperslab pagesperslab : tunables ... : slabdata active_slabs num_slabs ...
                out[v[0]] = int(v[14]) * int(v[5]) * 4096
    except (OSError, IndexError, ValueError):
        pass
    return out


def mem(label, groups):
    out = {"label": label, "t": round(time.time(), 2)}
    for k in ("MemAvailable", "Slab", "SReclaimable", "SUnreclaim", "MemFree"):
        out[k + "_kb"] = meminfo(k)
    out["sockstat_tcp"] = sockstat_tcp()
    out["slab_caches"] = slab_caches()
    out["rss"] = {}
    for g in groups:
        name, pids = g.split("=", 1)
        out["rss"][name] = rss_of([p for p in pids.split(",") if p])
    print(json.dumps(out))


def watch(secs, pids):
    end = time.monotonic() + float(secs)
    low_avail, high_tcp = None, None
    while time.monotonic() < end and any(os.path.exists(f"/proc/{p}") for p in pids):
        a = meminfo("MemAvailable")
        t = sockstat_tcp().get("mem", 0)
        low_avail = a if low_avail is None else min(low_avail, a)
        high_tcp = t if high_tcp is None else max(high_tcp, t)
        time.sleep(0.25)
    print(json.dumps({"min_mem_available_kb": low_avail, "max_tcp_mem_pages": high_tcp}))


def p5sum(mem_path, gens_path, kvs):
    reads = {r["label"]: r for r in (json.loads(l) for l in open(mem_path) if l.startswith("{"))}
    gens = [json.loads(l) for l in open(gens_path) if l.startswith("{")]
    out = {"part": "5", "kind": "box"}
    for kv in kvs:
        k, v = kv.split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    keys = ("conns", "opened", "open_at_end", "connect_errors", "connect_timeouts", "closed_by_server",
            "published", "publish_errors", "expected", "delivered", "lost", "duplicates", "strays")
    by = {}
    for g in gens:
        t = by.setdefault(g["transport"], {"generators": 0, **{k: 0 for k in keys}, "p50_ms": 0, "p99_ms": 0,
                                           "connect_secs_max": 0, "first_errors": []})
        t["generators"] += 1
        for k in keys:
            t[k] += g.get(k) or 0
        t["p50_ms"] = max(t["p50_ms"], g["latency_ms"]["p50"])
        t["p99_ms"] = max(t["p99_ms"], g["latency_ms"]["p99"])
        t["connect_secs_max"] = max(t["connect_secs_max"], g["connect_secs"])
        if g.get("first_error"):
            t["first_errors"].append(g["first_error"])
    out["by_transport"] = by
    out["total"] = {k: sum(t[k] for t in by.values()) for k in keys}
    # Memory per connection of each stage: the readings before and after that transport's
    # generators connected, over the connections they opened.
    stages, prev = {}, "servers_idle"
    for tr in ("ws", "sse", "longpoll"):
        if tr not in reads or prev not in reads or tr not in by:
            continue
        stages[tr] = delta(reads[prev], reads[tr], by[tr]["opened"])
        prev = tr
    if stages and "servers_idle" in reads:
        stages["all"] = delta(reads["servers_idle"], reads[prev], out["total"]["opened"])
    out["per_conn"] = stages
    # (every cache's figures stay in the readings file)
    out["readings"] = {k: {kk: vv for kk, vv in r.items() if kk != "slab_caches"} for k, r in reads.items()}
    print(json.dumps(out))


def delta(a, b, n):
    """Bytes per connection between readings a and b for n connections (both ends on this box)."""
    if not n:
        return None
    per = lambda kb_a, kb_b: round((kb_a - kb_b) * 1024 / n)
    rs = lambda g: b["rss"].get(g, 0) - a["rss"].get(g, 0)
    box = per(a["MemAvailable_kb"], b["MemAvailable_kb"])
    d = {
        "conns": n,
        "box_mem_available": box,
        "slab": per(b["Slab_kb"], a["Slab_kb"]),
        "slab_unreclaimable": per(b["SUnreclaim_kb"], a["SUnreclaim_kb"]),
        "tcp_mem_pages_delta": b["sockstat_tcp"].get("mem", 0) - a["sockstat_tcp"].get("mem", 0),
        "tcp_inuse_delta": b["sockstat_tcp"].get("inuse", 0) - a["sockstat_tcp"].get("inuse", 0),
        "herald_rss": round(rs("herald") / n),
        "gen_rss": round(rs("gens") / n),
        "redis_rss": round(rs("redis") / n),
    }
    # What is left of the box-wide figure once the measured user space is taken out: the
    # kernel's share, two sockets per connection (server end and client end).
    d["kernel_est"] = box - d["herald_rss"] - d["gen_rss"] - d["redis_rss"]
    d["kernel_est_per_socket"] = round(d["kernel_est"] / 2)
    ca, cb = a.get("slab_caches", {}), b.get("slab_caches", {})
    top = sorted(((k, cb[k] - ca.get(k, 0)) for k in cb), key=lambda kv: -kv[1])[:8]
    d["slab_caches_top"] = {k: round(v / n) for k, v in top}
    return d


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
        if part == "5":
            for r in rs:
                print(f"netns {r.get('netns')}: tcp_rmem {r.get('tcp_rmem')}, tcp_wmem {r.get('tcp_wmem')}; load avg {r.get('loadavg')}; "
                      f"descriptors per herald process {' / '.join(str(x) for x in r.get('per_process', []))}\n")
                print("| transport | generators | wanted | opened | open at end | publishes | expected | delivered | lost | dup | p50 ms | p99 ms |")
                print("|---|---|---|---|---|---|---|---|---|---|---|---|")
                rows = list(r["by_transport"].items()) + [("all", dict(r["total"], generators="-", p50_ms=None, p99_ms=None))]
                for tr, t in rows:
                    print("| " + " | ".join([tr, f(t["generators"]), f(t["conns"]), f(t["opened"]), f(t["open_at_end"]),
                        f(t["published"]), f(t["expected"]), f(t["delivered"]), f(t["lost"]), f(t["duplicates"]),
                        f(t.get("p50_ms"), 1), f(t.get("p99_ms"), 1)]) + " |")
                print("\n| stage (bytes per connection) | conns | box (MemAvailable) | slab | herald RSS | generators' RSS | redis RSS | kernel est. (box - user) | per socket | sockstat TCP mem pages |")
                print("|---|---|---|---|---|---|---|---|---|---|")
                for st, d in (r.get("per_conn") or {}).items():
                    if d:
                        print("| " + " | ".join([st, f(d["conns"]), f(d["box_mem_available"]), f(d["slab"]), f(d["herald_rss"]),
                            f(d["gen_rss"]), f(d["redis_rss"]), f(d["kernel_est"]), f(d["kernel_est_per_socket"]),
                            f(d["tcp_mem_pages_delta"])]) + " |")
                for st, d in (r.get("per_conn") or {}).items():
                    if d and d.get("slab_caches_top"):
                        print(f"\nslab caches grown most, {st} (bytes per connection, both ends): "
                              + ", ".join(f"{k} {f(v)}" for k, v in d["slab_caches_top"].items()))
                pk = r.get("publish_peak") or {}
                print(f"\nduring the broadcasts: MemAvailable at most {f(pk.get('mem_drop_kb'))} KiB below all-connected, "
                      f"sockstat TCP mem at most {f(pk.get('max_tcp_mem_pages'))} pages\n")
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
    elif cmd == "mem":
        mem(args[0], args[1:])
    elif cmd == "watch":
        watch(args[0], args[1:])
    elif cmd == "p5sum":
        p5sum(args[0], args[1], args[2:])
    elif cmd == "table":
        table(args[0])
    else:
        sys.exit(f"cluster.py: unknown command {cmd}")
