"""What the benchmarks share: how busy the machine was, and writing the results."""
import bisect
import json
import os
import time

# The machine counts as quiet within this much of its idle busy share (17 idle daemons keep it 0.08-0.12 busy).
QUIET_MARGIN = 0.05


def interpolate(times, values, when):
    """A sampled counter's value at ``when``: linear between the samples around it, clamped to the sampled span.

    ``times`` ascending, ``values`` the counter at each of them.
    """
    index = bisect.bisect_left(times, when)
    if index <= 0:
        return values[0]
    if index >= len(times):
        return values[-1]
    t0, t1 = times[index - 1], times[index]
    v0, v1 = values[index - 1], values[index]
    return v0 + (v1 - v0) * (when - t0) / max(t1 - t0, 1e-9)


def machine_jiffies():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def busy_over(seconds):
    """The machine's busy share over the next ``seconds``."""
    busy, total = machine_jiffies()
    time.sleep(seconds)
    busy_after, total_after = machine_jiffies()
    return (busy_after - busy) / max(total_after - total, 1)


def wait_quiet(busy_below, window=3.0, deadline=90.0, step=0.5):
    """Wait until the machine has been under ``busy_below`` busy for ``window`` seconds, or ``deadline`` passes.

    What a run before left running (a deploy's lingering peers, Salt's job
    bookkeeping, the kernel freeing a released tmpfs) would otherwise be
    counted in the next run's CPU. Returns ``{"quiet", "waited_seconds",
    "busy"}``: whether it got quiet, how long it waited and the busy share of
    the last ``window``. A ``window`` of 0 does not wait (``quiet`` None).
    """
    if window <= 0:
        return {"quiet": None, "waited_seconds": 0.0, "busy": None}
    started = time.monotonic()
    samples = [(started, machine_jiffies())]
    while True:
        time.sleep(step)
        now = time.monotonic()
        samples.append((now, machine_jiffies()))
        while len(samples) > 2 and samples[1][0] <= now - window:
            samples.pop(0)
        (since, (busy0, total0)), (_, (busy1, total1)) = samples[0], samples[-1]
        busy = (busy1 - busy0) / max(total1 - total0, 1)
        if now - since >= window - step / 2 and busy < busy_below:
            return {"quiet": True, "waited_seconds": round(now - started, 1), "busy": round(busy, 3)}
        if now - started > deadline:
            return {"quiet": False, "waited_seconds": round(now - started, 1), "busy": round(busy, 3)}


def judge(rows):
    """``[(id, name, value, limit, at_least), …]`` -> the targets, each {id, name, value, limit, met}.

    ``met`` is None for a value not measured (None); otherwise ``value >= limit``
    when ``at_least``, else ``value <= limit``.
    """
    return [{"id": key, "name": name, "value": value, "limit": limit,
             "met": None if value is None else (value >= limit if at_least else value <= limit)}
            for key, name, value, limit, at_least in rows]


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
