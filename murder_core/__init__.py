"""murder for Salt: the plain-Python core (no Salt imports).

Each module has one job: ``pack`` (release archives), ``torrent`` (metainfo),
``tracker`` (HTTP tracker), ``profile`` (libtorrent settings), ``swarm``
(seeder and peer), ``release`` (the on-disk release layout), ``minion`` (a
minion's fetch), ``store`` (the master's published releases), ``engine`` and
``lifecycle`` (the master's engine and one deploy's decisions), ``request``
(what crosses a process boundary), ``config`` (names, event tags and defaults).
"""
