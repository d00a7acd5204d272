#!/usr/bin/env python3
"""Draws a run's training loss and validation bits per byte to RUN/curves.png.

Usage: tools/plot_run.py RUN_DIR [--out FILE]
Needs matplotlib (Debian: apt-get install python3-matplotlib).
"""
import argparse
import json
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory (holds metrics.jsonl)")
    parser.add_argument("--out", help="PNG to write (default: RUN/curves.png)")
    args = parser.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_run.py needs matplotlib: apt-get install python3-matplotlib")

    steps, losses, eval_steps, bpb = [], [], [], []
    with open(f"{args.run}/metrics.jsonl") as f:
        for line in f:
            record = json.loads(line)
            if "loss" in record and "step_seconds" in record:
                steps.append(record["step"])
                losses.append(record["loss"])
            if "val_bpb" in record:
                eval_steps.append(record["step"])
                bpb.append(record["val_bpb"])
    if not steps:
        sys.exit(f"{args.run}/metrics.jsonl holds no training steps")

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(steps, losses, linewidth=1)
    left.set(xlabel="step", ylabel="training loss (nats per token)", title="training loss")
    left.grid(alpha=0.3)
    right.plot(eval_steps, bpb, marker="o")
    right.set(xlabel="step", ylabel="bits per byte", title="validation bits per byte")
    right.grid(alpha=0.3)
    figure.suptitle(args.run)
    figure.tight_layout()
    out = args.out or f"{args.run}/curves.png"
    figure.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
