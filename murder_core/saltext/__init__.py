"""Where Salt finds the project's loader modules when it is pip-installed.

``setup.cfg`` installs ``_modules``, ``_states`` and ``_runners`` of the
checkout as sub-packages of this one and registers :func:`loader_dirs` under
the ``salt.loader`` entry point, so a pip-installed copy needs no
``module_dirs``. An editable install (``pip install -e``) finds them in the
checkout itself.
"""
import pathlib

_HERE = pathlib.Path(__file__).resolve().parent
_CHECKOUT = _HERE.parent.parent

# Salt's loader kind -> the directory name in the checkout.
_KINDS = {"modules": "_modules", "states": "_states", "runners": "_runners"}


def loader_dirs():
    """Return ``{loader kind: [directory]}`` for Salt's entry-point loader."""
    dirs = {}
    for kind, checkout_name in _KINDS.items():
        for candidate in (_HERE / kind, _CHECKOUT / checkout_name):
            if candidate.is_dir():
                dirs[kind] = [str(candidate)]
                break
    return dirs


SNIPPET = _CHECKOUT / "salt" / "master.d" / "murder.conf"
SNIPPET_ROOT = "/opt/murder"


def master_snippet(root=None):
    """The shipped master config snippet as a dict, ``/opt/murder`` replaced by ``root``.

    The tests and ``make demo`` configure their masters with exactly this.
    """
    import yaml

    text = SNIPPET.read_text(encoding="utf-8")
    return yaml.safe_load(text.replace(SNIPPET_ROOT, str(root or _CHECKOUT)))
