"""What the benchmarks share: how busy the machine was, and writing the results."""
import json
import os


def machine_jiffies():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def write(results, path, plot=None, plot_path=""):
    """Write ``results`` as JSON to ``path`` (atomically), then ``plot(results, plot_path)`` when one is asked for."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = path + ".tmp"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
        handle.write("\n")
    os.replace(partial, path)
    if plot is not None and plot_path:
        plot(results, plot_path)


def finish(results, judged, table, plot, results_path, plot_path):
    """Record the run's ``judged`` targets, write the results (and the plot), print ``table(results)``.

    A run counts only if the machine stayed mostly idle: ``counts`` is the
    verdict of the ``cpu_busy`` target (None when nothing was judged).
    """
    results["targets"] = judged
    results["counts"] = next((t["met"] for t in judged if t["id"] == "cpu_busy"), None)
    write(results, results_path, plot, plot_path)
    print(table(results))
    print(f"results: {results_path}" + (f", plot: {plot_path}" if plot_path else ""))
