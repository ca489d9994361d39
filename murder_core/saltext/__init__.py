"""What a Salt master needs of murder, found where the package is: installed or a checkout.

``setup.cfg`` installs the checkout's ``_modules``, ``_states``,
``_runners``, ``_engines``, ``_output`` and ``_grains`` as sub-packages of this one
(``modules``, ``states``, ``runners``, ``engines``, ``output``, ``grains``), and the reactor SLS (``reactor/``) and the state tree
(``salt/``) as its package data (``reactor``, ``state_tree``). Salt finds
the loader modules through the ``salt.loader`` entry point
(:func:`loader_dirs`), so a pip-installed master needs no ``module_dirs``;
an editable install (``pip install -e``) finds the same directories in the
checkout itself.

:func:`master_snippet` is the master configuration murder needs, with the
paths of this copy; ``python -m murder_core.saltext snippet`` prints it for
``/etc/salt/master.d/murder.conf``. The tests and ``make demo`` configure
their masters with exactly this.
"""
import pathlib

_HERE = pathlib.Path(__file__).resolve().parent
_CHECKOUT = _HERE.parent.parent

# Installed name (a sub-package of this one) -> the directory's name in a checkout.
_LOADER_KINDS = {"modules": "_modules", "states": "_states", "runners": "_runners", "engines": "_engines",
                 "output": "_output", "grains": "_grains"}
_DATA = {"reactor": "reactor", "state_tree": "salt"}

# The file name every wheel of this project starts with (PEP 427: name with '_').
WHEEL_PREFIX = "murder_salt-"
# Where Salt's file roots come from when the operator's master config names none.
SALT_DEFAULT_FILE_ROOT = "/srv/salt"
# The engine's store on a master with Salt's default cachedir.
DEFAULT_STORE_DIR = "/var/cache/salt/master/murder"
# Events Salt's bus may hold for one subscriber before it drops that subscriber (Salt's default is
# 10,000). A deploy to N minions puts about 4 N events on the bus (two progress, done, the job's
# return), most of them within seconds of the swarm's end, and can come faster than the engine reads
# them (143-366 us an event, measured); events queued for a dropped subscriber are lost, so at Salt's
# default a fleet of 10,000 lost 7,402 `done` events in `bench/engine_events.py`. Room for 100,000:
# fleets to 25,000.
EVENT_QUEUE = 100_000


def _find(installed, checkout_name):
    for candidate in (_HERE / installed, _CHECKOUT / checkout_name):
        if candidate.is_dir():
            return candidate
    return None


def loader_dirs():
    """Return ``{loader kind: [directory]}`` for Salt's entry-point loader."""
    dirs = {}
    for kind, checkout_name in _LOADER_KINDS.items():
        found = _find(kind, checkout_name)
        if found is not None:
            dirs[kind] = [str(found)]
    return dirs


def data_dir(kind):
    """The directory of the shipped ``reactor`` SLS or ``state_tree``; FileNotFoundError if missing."""
    found = _find(kind, _DATA[kind])
    if found is None:
        raise FileNotFoundError(f"murder's {kind} is neither installed beside {_HERE} nor in a checkout")
    return found


def reactions():
    """The reactor entries: event tag -> the absolute path of its SLS (no file_roots needed)."""
    reactor = data_dir("reactor")
    return [{"murder/deploy/*/start": [str(reactor / "deploy_start.sls")]}]


def master_snippet(wheel_dir=None, store_dir=DEFAULT_STORE_DIR):
    """The master configuration murder needs, as a dict, with the paths of this copy.

    It enables the engine, names the reaction by absolute path, and sets a
    ``file_roots`` that serves the state tree (``salt://murder/minion.sls``,
    …), the engine's published releases (``salt://murder-published/…``, in
    ``store_dir``) and, with ``wheel_dir``, the directory holding this
    project's wheel, which the ``murder.minion`` state installs on minions.
    It also lets Salt's event bus queue :data:`EVENT_QUEUE` events for a
    subscriber that reads slower than a deploy's events arrive (the engine).
    Salt merges the lists of every config file; since a file that names
    ``file_roots`` replaces Salt's default, ``/srv/salt`` stays listed first.
    """
    store_dir = str(pathlib.Path(store_dir).resolve())
    roots = [SALT_DEFAULT_FILE_ROOT, str(data_dir("state_tree")), str(pathlib.Path(store_dir) / "fileserver")]
    if wheel_dir is not None:
        roots.append(str(pathlib.Path(wheel_dir).resolve()))
    snippet = {
        "engines": [{"murder": {}}],
        "reactor": reactions(),
        "file_roots": {"base": roots},
        "pub_server_write_queue_size": EVENT_QUEUE,
    }
    # A key set here replaces the same key of /etc/salt/master: the operator's own murder
    # settings stay there untouched unless the store is not where the engine looks by default.
    if store_dir != str(pathlib.Path(DEFAULT_STORE_DIR).resolve()):
        snippet["murder"] = {"store_dir": store_dir}
    return snippet
