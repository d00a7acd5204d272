#!/usr/bin/env python3
"""The summary table of the GPU check (run.sh calls it last; docs/gpu.md explains the table).

Reads what run.sh left in --work (stages.tsv, suites.tsv, tests.tsv, xml/*.xml) and --results
(test_cuda.log, bench.log), writes --results/test_cuda.xml (one JUnit file for all suites, with
crashed and unfinished tests as errors and skips), and prints the summary. Standard library only.
"""
import argparse
import json
import os
import re
import xml.etree.ElementTree as ET

PRESETS = ("gpt2-124m", "llama-1b")
IMPLS = ("tsumugi", "torch-eager", "torch-compile")
# Issue 5's targets: MFU of tsumugi's bf16 training step; GPT-2 at least torch.compile's tokens/s.
MFU_TARGETS = {"gpt2-124m": 0.50, "llama-1b": 0.55}


def read_tsv(path, columns):
    rows = []
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                rows.append(dict(zip(columns, parts + [""] * (len(columns) - len(parts)))))
    return rows


def first_line(text, limit=150):
    text = (text or "").strip().splitlines()
    return text[0][:limit] if text else ""


def collect_tests(work, results):
    """Each expected test's outcome: passed, failed, skipped, crashed, timed out or not run."""
    expected = [(r["suite"], r["test"]) for r in read_tsv(os.path.join(work, "tests.tsv"), ["suite", "test"])]
    suites = {r["suite"]: r for r in read_tsv(os.path.join(work, "suites.tsv"), ["suite", "status", "seconds", "detail"])}
    outcome, message, elements = {}, {}, []
    xml_dir = os.path.join(work, "xml")
    for name in sorted(os.listdir(xml_dir)) if os.path.isdir(xml_dir) else []:
        try:
            root = ET.parse(os.path.join(xml_dir, name)).getroot()
        except ET.ParseError:
            continue  # cut short by a crash
        for suite in root.iter("testsuite"):
            elements.append(suite)
            for case in suite.iter("testcase"):
                key = (case.get("classname"), case.get("name"))
                failure = case.find("failure")
                if failure is not None:
                    outcome[key], message[key] = "failed", first_line(failure.get("message"))
                elif case.find("skipped") is not None or case.get("result") == "skipped":
                    outcome[key] = "skipped"
                elif case.get("status") == "notrun":
                    outcome[key] = "skipped"
                else:
                    outcome[key] = "passed"
    # Suites that crashed wrote no XML: their finished tests are in the log.
    log = os.path.join(results, "test_cuda.log")
    if os.path.exists(log):
        pattern = re.compile(r"^\[ +(OK|FAILED|SKIPPED) +\] ([^ .]+(?:/[^ .]+)?)\.([^ ]+)")
        with open(log, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = pattern.match(line.rstrip())
                if m and (m.group(2), m.group(3)) not in outcome:
                    state = {"OK": "passed", "FAILED": "failed", "SKIPPED": "skipped"}[m.group(1)]
                    outcome[(m.group(2), m.group(3))] = state
    for suite, test in expected:
        if (suite, test) in outcome:
            continue
        info = suites.get(suite, {"status": "not run", "detail": ""})
        running = info["detail"] == f"{suite}.{test}"
        outcome[(suite, test)] = info["status"] if running else "not run"
        if running:
            message[(suite, test)] = "the process ended in this test (test_cuda.log)"
    return expected, outcome, message, elements


def write_junit(path, expected, outcome, message, elements):
    """One JUnit file: the suites' own XML, plus synthesized suites for those that crashed."""
    root = ET.Element("testsuites", name="test_cuda")
    have = set()
    for suite in elements:
        root.append(suite)
        have.update((c.get("classname"), c.get("name")) for c in suite.iter("testcase"))
    synthesized = {}
    for suite, test in expected:
        if (suite, test) in have:
            continue
        if suite not in synthesized:
            synthesized[suite] = ET.SubElement(root, "testsuite", name=suite)
        case = ET.SubElement(synthesized[suite], "testcase", name=test, classname=suite)
        state = outcome[(suite, test)]
        if state == "failed":
            ET.SubElement(case, "failure", message=message.get((suite, test), "failed (see test_cuda.log)"))
        elif state in ("skipped", "not run"):
            ET.SubElement(case, "skipped", message=state)
        elif state != "passed":
            ET.SubElement(case, "error", message=message.get((suite, test), state))
    counts = {k: sum(1 for v in outcome.values() if v == k) for k in ("failed", "skipped", "not run")}
    root.set("tests", str(len(outcome)))
    root.set("failures", str(counts["failed"]))
    root.set("skipped", str(counts["skipped"] + counts["not run"]))
    root.set("errors", str(len(outcome) - sum(1 for v in outcome.values() if v in ("passed", "failed", "skipped",
                                                                                       "not run"))))
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def read_results(results):
    gemm, train = {}, {}
    path = os.path.join(results, "bench.log")
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.startswith("RESULT "):
                    continue
                try:
                    r = json.loads(line[len("RESULT "):])
                except json.JSONDecodeError:
                    continue
                if r.get("bench") == "gemm":
                    gemm[r.get("impl")] = r
                elif r.get("bench") == "train":
                    train[(r.get("preset"), r.get("impl"))] = r
    return gemm, train


def fmt(value, spec):
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--seconds", type=int, default=0)
    parser.add_argument("--build-info", default="")
    args = parser.parse_args()
    stages = read_tsv(os.path.join(args.work, "stages.tsv"), ["name", "status", "seconds", "detail"])
    by_stage = {s["name"]: s for s in stages}
    commit = ""
    if args.build_info and os.path.exists(args.build_info):
        with open(args.build_info, encoding="utf-8") as f:
            commit = next((line.split(": ", 1)[1].strip() for line in f if line.startswith("commit: ")), "")

    bar = "=" * 100
    print(bar)
    gpu = re.sub(r" \(UUID: [^)]*\)", "", by_stage.get("env", {}).get("detail", "")) or "no GPU reported by nvidia-smi"
    print(f"tsumugi GPU check  |  {gpu}  |  bundle {commit or '?'}  |  {args.seconds} s")
    print(bar)
    print(f"{'stage':<22} {'status':<16} {'seconds':>7}  detail")
    for s in stages:
        if s["name"] == "env":
            continue
        print(f"{s['name']:<22} {s['status']:<16} {s['seconds']:>7}  {s['detail'][:60]}")

    if "test_cuda" in by_stage:
        expected, outcome, message, elements = collect_tests(args.work, args.results)
        if expected:
            write_junit(os.path.join(args.results, "test_cuda.xml"), expected, outcome, message, elements)
        count = {k: sum(1 for v in outcome.values() if v == k) for k in set(outcome.values())}
        passed, failed, skipped = count.pop("passed", 0), count.pop("failed", 0), count.pop("skipped", 0)
        others = ", ".join(f"{n} {k}" for k, n in sorted(count.items()))
        print()
        print(f"test_cuda: {passed} passed, {failed} failed, {skipped} skipped" + (f", {others}" if others else "")
              + f" (of {len(expected)} tests)")
        if skipped and skipped == len(expected):
            print("  every test skipped itself: the binaries saw no GPU")
        bad = [(k, v) for k, v in outcome.items() if v not in ("passed", "skipped", "not run")]
        for (suite, test), state in bad[:25]:
            print(f"  {state.upper():<9} {suite}.{test}: {message.get((suite, test), '')}")
        if len(bad) > 25:
            print(f"  ... and {len(bad) - 25} more (test_cuda.log, test_cuda.xml)")

    gemm, train = read_results(args.results)
    bench_stages = [s for s in stages if s["name"].startswith(("tsumugi ", "torch "))]
    if bench_stages:
        print()
        line = "GEMM bf16 8192^3 (the MFU denominator): "
        line += ", ".join(f"{impl} {fmt(r.get('tflops'), '.1f')} TFLOP/s" for impl, r in sorted(gemm.items()))
        print(line if gemm else line + "not measured")
        header = (f"{'model':<10} {'impl':<14} {'batch x T':>10} {'step ms':>8} {'tokens/s':>10} {'TFLOP/s':>8} "
                  f"{'GEMM':>6} {'MFU':>6} {'peak GiB':>9}  note")
        print(header)
        print("-" * len(header))
        for preset in PRESETS:
            for impl in IMPLS:
                stage = by_stage.get(f"{'tsumugi' if impl == 'tsumugi' else 'torch'} {preset}")
                r = train.get((preset, impl))
                if stage is None and r is None:
                    continue
                if r is None or "error" in r:
                    if r:
                        why = r["error"]
                    elif stage["status"] == "timed out":
                        why = f"timed out after {stage['seconds']} s"
                    else:
                        why = f"{stage['status']}: {stage['detail']}"
                    print(f"{preset:<10} {impl:<14} {'':>10} {'-':>8} {'-':>10} {'-':>8} {'-':>6} {'-':>6} {'-':>9}  "
                          f"{why[:70]}")
                    continue
                note = ""
                if "warmup_s" in r and impl == "torch-compile":
                    note = f"warm-up incl. compile {r['warmup_s']} s"
                print(f"{preset:<10} {impl:<14} {str(r.get('batch')) + ' x ' + str(r.get('seq')):>10} "
                      f"{fmt(r.get('step_ms'), '.1f'):>8} {fmt(r.get('tokens_per_s'), ',.0f'):>10} "
                      f"{fmt(r.get('model_tflops'), '.1f'):>8} {fmt(r.get('gemm_tflops'), '.0f'):>6} "
                      f"{fmt(r.get('mfu'), '.3f'):>6} {fmt(r.get('peak_mem_gib'), '.1f'):>9}  {note}")
        print()
        targets = []
        for preset, goal in MFU_TARGETS.items():
            r = train.get((preset, "tsumugi"))
            mfu = r.get("mfu") if r else None
            verdict = "n/a" if mfu is None else ("yes" if mfu >= goal else "NO")
            targets.append(f"{preset} MFU >= {goal:.2f}: {verdict}")
        ours, theirs = train.get(("gpt2-124m", "tsumugi")), train.get(("gpt2-124m", "torch-compile"))
        if ours and theirs and "tokens_per_s" in ours and "tokens_per_s" in theirs:
            ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
            targets.append(f"gpt2-124m tokens/s vs torch.compile: {ratio:.2f}x ({'yes' if ratio >= 1 else 'NO'})")
        else:
            targets.append("gpt2-124m tokens/s vs torch.compile: n/a")
        print("issue 5 targets: " + "; ".join(targets))
    print(bar)


if __name__ == "__main__":
    main()
