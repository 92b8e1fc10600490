"""Draws docs/benchmarks.png from the suite's results: chain throughput and latency per system."""

from __future__ import annotations

import json
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(results_json: str, out: str) -> None:
    with open(results_json) as f:
        results = json.load(f)["results"]
    keys = [k for k in results if "chain.throughput" in results[k]["summary"]]
    labels = [_wrapped(results[k]["label"]) for k in keys]
    colors = ["#2e7d32" if k.startswith("stepline") else "#90a4ae" for k in keys]
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(12, 1.8 * len(keys)), 4.8))

    throughput = [results[k]["summary"]["chain.throughput"]["median"] for k in keys]
    bars = left.bar(labels, throughput, color=colors)
    left.set_yscale("log")
    left.set_title("Three-step chains completed per second (log scale, higher is better)")
    left.bar_label(bars, labels=[f"{v:,.0f}" if v >= 10 else f"{v:.1f}" for v in throughput], padding=2)

    p50 = [results[k]["summary"]["chain.p50_ms"]["median"] for k in keys]
    p99 = [results[k]["summary"]["chain.p99_ms"]["median"] for k in keys]
    x = range(len(keys))
    right.bar([i - 0.2 for i in x], p50, width=0.4, color=colors, label="p50")
    right.bar([i + 0.2 for i in x], p99, width=0.4, color=colors, alpha=0.5, label="p99")
    right.set_xticks(list(x), labels)
    right.set_yscale("log")
    right.set_title("Request to chain done under load, ms (log scale, lower is better)")
    right.legend()
    for axis in (left, right):
        axis.tick_params(axis="x", labelsize=8)
        axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def _wrapped(label: str) -> str:
    """A system's label on a few short lines, so that neighbouring labels under the bars do not overlap."""
    lines = label.replace(" + ", "\n+ ").replace(", ", "\n").replace(" (", "\n(").splitlines()
    return "\n".join(part for line in lines for part in textwrap.wrap(line, 13))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
