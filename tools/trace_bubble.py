#!/usr/bin/env python3
"""Where a pipeline's idle time comes from, from a tsumugi Chrome trace (tsumugi train --trace FILE).

Usage: tools/trace_bubble.py TRACE.json [--replica D]

For every traced step after the first, and each stage of one pipeline (replica D, default 0):

  measured     1 - the stage's forward and backward time / the pipeline's step (from the first
               span of any stage to the last one of any stage: a stage that is done early idles
               until the others are, as (P - 1) / (M + P - 1) counts it). This is what the
               trainer prints as "idle per stage".
  schedule     the same stage's idle if every message arrived the instant it was sent: the
               schedule replayed with the measured duration of every forward and backward pass.
  steady       the replay again with every forward (backward) of a stage at that stage's mean.
  ideal        (P - 1) / (M + P - 1): equal stages, backward and forward in the same ratio on
               every stage, no transport cost.

measured - schedule is what moving activations costs (transfers, waits, bookkeeping);
schedule - steady is jitter (passes that take longer one time than another);
steady - ideal is imbalance between the stages. Each column is the median over the steps.
Standard library only.
"""
import argparse
import json
import re
import statistics


def steps_of(spans):
    """A rank's spans cut into steps at its optimizer spans: [[forward/backward/recv/send spans], ...]."""
    steps, current = [], []
    for e in sorted(spans, key=lambda e: e["ts"]):
        if e["cat"] == "optimizer":
            steps.append(current)
            current = []
        else:
            current.append(e)
    return steps


def replay(actions, duration):
    """Idle share per stage when each pass starts as soon as its input exists and its stage is free.

    actions[s]: stage s's passes in the order it ran them, as ("forward" | "backward", micro-batch).
    duration(s, i): how long stage s's i-th pass takes.
    """
    stages = len(actions)
    end, free, busy, done = {}, [0.0] * stages, [0.0] * stages, [0] * stages
    progress = True
    while progress:
        progress = False
        for s in range(stages):
            while done[s] < len(actions[s]):
                kind, m = actions[s][done[s]]
                if kind == "forward":
                    ready = end.get((s - 1, kind, m)) if s > 0 else 0.0
                else:  # the gradient from the next stage, or on the last stage its own loss
                    ready = end.get((s + 1, kind, m)) if s + 1 < stages else end.get((s, "forward", m))
                if ready is None:
                    break
                cost = duration(s, done[s])
                start = max(ready, free[s])
                end[(s, kind, m)] = free[s] = start + cost
                busy[s] += cost
                done[s] += 1
                progress = True
    if done != [len(a) for a in actions]:
        raise SystemExit("the traced passes do not form a pipeline schedule (a stage waits forever)")
    makespan = max(free)
    return [1.0 - b / makespan for b in busy]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("--replica", type=int, default=0, help="which data-parallel replica's pipeline")
    args = parser.parse_args()
    events = json.load(open(args.trace))["traceEvents"]
    stage_of = {}  # pid -> stage, for the chosen replica
    for e in events:
        if e.get("name") == "process_name":
            found = re.search(r"stage (\d+), replica (\d+)", e["args"]["name"])
            if found and int(found.group(2)) == args.replica:
                stage_of[e["pid"]] = int(found.group(1))
    if len(stage_of) < 2:
        raise SystemExit(f"no pipeline of 2 or more stages for replica {args.replica} in {args.trace}")
    stages = len(stage_of)
    pid_of = {s: pid for pid, s in stage_of.items()}
    per_stage = [steps_of([e for e in events if e.get("ph") == "X" and e["pid"] == pid_of[s]]) for s in range(stages)]
    count = min(len(steps) for steps in per_stage)
    if count < 2:
        raise SystemExit("fewer than 2 traced steps: trace more (log.trace_steps)")
    columns = {name: [[] for _ in range(stages)] for name in ("measured", "schedule", "steady")}
    micro_batches = 0
    for k in range(1, count):  # the first step includes warm-up
        step = [per_stage[s][k] for s in range(stages)]
        passes = [[e for e in spans if e["cat"] in ("forward", "backward")] for spans in step]
        actions = [[(e["cat"], int(e["name"][1:])) for e in p] for p in passes]
        micro_batches = sum(1 for kind, _ in actions[0] if kind == "forward")
        start = min(spans[0]["ts"] for spans in step)
        end = max(e["ts"] + e["dur"] for spans in step for e in spans)
        for s in range(stages):
            columns["measured"][s].append(1.0 - sum(e["dur"] for e in passes[s]) / (end - start))
        for s, idle in enumerate(replay(actions, lambda s, i: passes[s][i]["dur"])):
            columns["schedule"][s].append(idle)
        mean = [{kind: statistics.mean(e["dur"] for e in p if e["cat"] == kind) for kind in ("forward", "backward")}
                for p in passes]
        for s, idle in enumerate(replay(actions, lambda s, i: mean[s][passes[s][i]["cat"]])):
            columns["steady"][s].append(idle)
    ideal = (stages - 1) / (micro_batches + stages - 1)
    print(f"{stages} stages, {micro_batches} micro-batches, {count - 1} steps (the first traced step left out); "
          f"idle share per stage, median over the steps")
    print(f"{'stage':>5} {'measured':>9} {'schedule':>9} {'steady':>9} {'ideal':>6}")
    for s in range(stages):
        row = [100 * statistics.median(columns[name][s]) for name in ("measured", "schedule", "steady")]
        print(f"{s:>5} {row[0]:8.1f}% {row[1]:8.1f}% {row[2]:8.1f}% {100 * ideal:5.1f}%")


if __name__ == "__main__":
    main()
