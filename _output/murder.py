"""The ``murder`` outputter: a deploy's summary that fits on a screen, whatever the fleet's size.

``salt-run murder.deploy``, ``murder.wait`` and ``murder.status`` use it by
default; ``--out=json`` or ``--out=yaml`` still give the full data.
Totals come first, then one line per host that failed, was rolled back or
never switched, with its reason; every host gets a line when there are at
most ``HOSTS_SHOWN`` of them.
"""
HOSTS_SHOWN = 20


def _kind(host):
    if host.get("rolled_back"):
        return "rolled back"
    if host.get("activated"):
        return "activated"
    if host.get("state") in ("failed", "timed out"):
        return host["state"]
    if str(host.get("comment", "")).startswith(("activation failed", "did not answer")):
        return "failed"
    if str(host.get("comment", "")).startswith("never switched"):
        return "never switched"
    return "not activated" if host.get("state") == "done" else host.get("state", "?")


def _deploy(summary):
    state = summary.get("state", "?")
    head = (f"deploy {summary.get('deploy_id')}: {summary.get('app')} {summary.get('release') or '(no release)'} "
            f"{state.upper()}")
    if "seconds" in summary:
        head += f" in {summary['seconds']:.1f} s"
    if "distribution_seconds" in summary:
        head += f" (distribution {summary['distribution_seconds']:.1f} s)"
    lines = [head]
    if summary.get("error"):
        lines.append(f"  error: {summary['error']}")
    hosts = summary.get("minions") or {}
    if hosts:
        counts = {}
        for host in hosts.values():
            counts[_kind(host)] = counts.get(_kind(host), 0) + 1
        lines.append(f"  {len(hosts)} hosts: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())))
        for minion, host in sorted(hosts.items()):
            kind = _kind(host)
            if len(hosts) <= HOSTS_SHOWN or kind != "activated":
                lines.append(f"  {kind:<14} {minion}: {host.get('comment', '')}")
    return lines


def output(data, **kwargs):  # pylint: disable=unused-argument
    """Render a deploy summary or a ``murder.status`` listing; anything else as its text."""
    if isinstance(data, dict) and "deploys" in data:
        lines = [f"{d['deploy_id']}: {d['app']} {d['release'] or '(no release)'} {d['state']}, "
                 f"{len(d.get('minions', {}))} hosts" + (f" ({d['error']})" if d.get("error") else "")
                 for d in data["deploys"]]
        return "\n".join(lines) or "no deploys"
    if isinstance(data, dict) and "deploy_id" in data:
        return "\n".join(_deploy(data))
    if isinstance(data, dict) and "error" in data:
        return f"error: {data['error']}"
    return str(data)
