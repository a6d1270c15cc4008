#!/usr/bin/env python3
"""Run libFuzzer targets, each until it has used a CPU budget (user+sys), two at a time, niced.

usage: cpu_budget.py LOGDIR target=binary:corpus:seeds:artifacts:budget_s ...
Writes LOGDIR/<target>.log (the fuzzer's stderr) and appends a JSON line per run to
LOGDIR/runs.jsonl: target, wall_s, cpu_user_s, cpu_sys_s, exit code, execs, peak_rss_mb,
last cov/ft, artifacts written.
"""
import json, os, re, signal, subprocess, sys, threading, time

logdir = sys.argv[1]
os.makedirs(logdir, exist_ok=True)
jobs = []
for arg in sys.argv[2:]:
    name, rest = arg.split("=", 1)
    binary, corpus, seeds, artifacts, budget = rest.split(":")
    jobs.append((name, binary, corpus, seeds, artifacts, float(budget)))
lock = threading.Lock()


def run(name, binary, corpus, seeds, artifacts, budget):
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(artifacts, exist_ok=True)
    before = set(os.listdir(artifacts))
    log = open(os.path.join(logdir, name + ".log"), "w")
    start = time.time()
    p = subprocess.Popen(
        ["nice", "-n", "19", binary, corpus, seeds, "-print_final_stats=1",
         "-max_total_time=100000", "-artifact_prefix=" + artifacts.rstrip("/") + "/"],
        stderr=log, stdout=log)
    interrupted = False
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        try:
            f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
            cpu = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError):
            cpu = 0
        if cpu >= budget and not interrupted:
            os.kill(p.pid, signal.SIGINT)
            interrupted = True
        time.sleep(2)
    wall = time.time() - start
    log.close()
    text = open(os.path.join(logdir, name + ".log"), errors="replace").read()
    stat = dict(re.findall(r"stat::(\w+):\s+(\d+)", text))
    cov = re.findall(r"cov: (\d+) ft: (\d+)", text)
    row = dict(target=name, wall_s=round(wall, 1), cpu_user_s=round(ru.ru_utime, 1),
               cpu_sys_s=round(ru.ru_stime, 1), exit=os.waitstatus_to_exitcode(status),
               interrupted_at_budget=interrupted,
               execs=int(stat.get("number_of_executed_units", 0)),
               peak_rss_mb=int(stat.get("peak_rss_mb", 0)),
               cov=int(cov[-1][0]) if cov else None, ft=int(cov[-1][1]) if cov else None,
               new_artifacts=sorted(set(os.listdir(artifacts)) - before),
               end=time.strftime("%H:%M:%S"))
    with lock:
        with open(os.path.join(logdir, "runs.jsonl"), "a") as out:
            out.write(json.dumps(row) + "\n")


def worker():
    while True:
        with lock:
            if not jobs:
                return
            job = jobs.pop(0)
        run(*job)


threads = [threading.Thread(target=worker) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
