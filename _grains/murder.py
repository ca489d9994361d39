"""The ``murder_location`` grain: this minion's ``murder:`` ``rack`` and ``datacenter`` settings.

Salt keeps every minion's grains in the master's minion data cache; from
there the murder engine learns where the minions of a deploy are before
their peers start (``murder_core.rack_split``), also when the place is set
in the minion's config rather than as grains. Refreshed with the grains
(``salt '*' saltutil.refresh_grains``) or when the minion restarts.
"""

GRAIN = "murder_location"
KEYS = ("datacenter", "rack")


def murder_location():
    """``{"murder_location": {"rack": …, "datacenter": …}}`` with the keys this minion's config sets, else nothing.

    CLI Example:

    .. code-block:: bash

        salt '*' grains.get murder_location
    """
    settings = __opts__.get("murder") or {}  # noqa: F821 pylint: disable=undefined-variable
    found = {key: settings[key] for key in KEYS if settings.get(key) not in (None, "")}
    return {GRAIN: found} if found else {}
