"""``python -m murder_core.saltext snippet``: print the master config murder needs.

Run it with the Python Salt runs on (the one murder is installed in)::

    python -m murder_core.saltext snippet --wheel-dir /srv/murder/wheels > /etc/salt/master.d/murder.conf
"""
import argparse
import pathlib
import sys

import yaml

from murder_core.saltext import DEFAULT_STORE_DIR, WHEEL_PREFIX, master_snippet

HEADER = """\
# murder for Salt: the master side, written by `python -m murder_core.saltext snippet`
# with the paths of the copy installed in {python}.
# engines: the murder engine (tracker, seeders, deploys); reactor: the reaction, by absolute
# path; file_roots: the state tree (murder.minion, ...), the published releases minions fetch
# and the wheel the murder.minion state installs on minions; murder: settings (README).
"""


def _wheels(directory):
    return sorted(path.name for path in pathlib.Path(directory).glob(f"{WHEEL_PREFIX}*.whl"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m murder_core.saltext", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    snippet = commands.add_parser("snippet", help="print the master config snippet (YAML)")
    snippet.add_argument("--wheel-dir", help="directory holding the murder_salt wheel, served to minions")
    snippet.add_argument("--store-dir", default=DEFAULT_STORE_DIR,
                         help=f"where the engine keeps published releases (default {DEFAULT_STORE_DIR})")
    args = parser.parse_args(argv)

    if args.wheel_dir is not None:
        found = _wheels(args.wheel_dir) if pathlib.Path(args.wheel_dir).is_dir() else []
        if len(found) != 1:
            parser.error(f"--wheel-dir {args.wheel_dir} must hold exactly one {WHEEL_PREFIX}*.whl, "
                         f"found {found or 'none'}")
    sys.stdout.write(HEADER.format(python=sys.executable))
    sys.stdout.write(yaml.safe_dump(master_snippet(args.wheel_dir, args.store_dir), default_flow_style=False, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
