"""CPU used by other processes while a benchmark runs.

    procsnap.py snap FILE                 record every process's CPU ticks
    procsnap.py others FILE0 FILE1 PID..  ticks used between the snapshots by
                                          processes outside the trees of PID..

Per-process accounting (utime+stime, plus cutime+cstime so processes that
exit during the window are counted in their parent), which is precise for
short bursts where /proc/stat's tick sampling is not.
"""

import os
import sys


def snap():
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after "pid (comm)": state ppid ... utime(12) stime(13) cutime(14) cstime(15)
        ppid = int(fields[1])
        ticks = sum(int(x) for x in fields[11:15])
        out[int(name)] = (ppid, ticks)
    return out


def load(path):
    out = {}
    with open(path) as f:
        for line in f:
            pid, ppid, ticks = map(int, line.split())
            out[pid] = (ppid, ticks)
    return out


def excluded(procs, roots):
    ex = set()
    for pid in procs:
        p, seen = pid, 0
        while p in procs and seen < 64:
            if p in roots:
                ex.add(pid)
                break
            p, seen = procs[p][0], seen + 1
    return ex


def main():
    if sys.argv[1] == "snap":
        with open(sys.argv[2], "w") as f:
            for pid, (ppid, ticks) in snap().items():
                f.write(f"{pid} {ppid} {ticks}\n")
        return
    a, b = load(sys.argv[2]), load(sys.argv[3])
    roots = {int(p) for p in sys.argv[4:]}
    ex = excluded(a, roots) | excluded(b, roots)
    total = 0
    for pid in set(a) | set(b):
        if pid in ex:
            continue
        total += b.get(pid, (0, 0))[1] - a.get(pid, (0, 0))[1]
    print(total)


if __name__ == "__main__":
    main()
