#!/usr/bin/env python3
"""Draws one step of a tsumugi Chrome trace (tsumugi train --trace FILE) as text, one line per rank.

Usage: tools/trace_timeline.py TRACE.json [--step K] [--width N]

Forward passes of micro-batch m are drawn with the digit m (then letters past 9), backward passes
with the letter a + m in upper case, receive waits with '<', the optimizer with '#', and anything
else (waiting for sends, idle) with '.'. Step K (default: the last traced step) runs from the end
of rank 0's optimizer span of step K - 1 to the end of its optimizer span of step K.
"""
import argparse
import json
import string


def mark(span):
    number = int(span["name"][1:]) if span["name"][1:].isdigit() else 0
    if span["cat"] == "forward":
        return (string.digits + string.ascii_lowercase)[number % 36]
    if span["cat"] == "backward":
        return string.ascii_uppercase[number % 26]
    return {"recv": "<", "optimizer": "#"}.get(span["cat"], ".")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("--step", type=int, default=-1, help="which traced step (1-based; default the last)")
    parser.add_argument("--width", type=int, default=100)
    args = parser.parse_args()
    events = json.load(open(args.trace))["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
    spans = [e for e in events if e.get("ph") == "X"]
    ends = sorted(e["ts"] + e["dur"] for e in spans if e["pid"] == 0 and e["cat"] == "optimizer")
    if not ends:
        raise SystemExit("no optimizer spans on rank 0: not a tsumugi training trace")
    k = len(ends) if args.step < 0 else args.step
    start = ends[k - 2] if k >= 2 else min(e["ts"] for e in spans)
    end = ends[k - 1]
    scale = args.width / (end - start)
    print(f"step {k} of the trace: {(end - start) / 1000:.1f} ms; digits/lowercase: forward of micro-batch m, "
          f"uppercase: its backward, <: receive wait, #: optimizer, .: other or idle")
    for pid in sorted({e["pid"] for e in spans}):
        line = ["."] * args.width
        for e in sorted((e for e in spans if e["pid"] == pid), key=lambda e: e["ts"]):
            a, b = max(e["ts"], start), min(e["ts"] + e["dur"], end)
            if b <= a:
                continue
            first = int((a - start) * scale)
            for i in range(first, max(first + 1, int((b - start) * scale))):
                if i < args.width:
                    line[i] = mark(e)
        print(f"{names.get(pid, pid):>28} |{''.join(line)}|")


if __name__ == "__main__":
    main()
