"""murder for Salt: the plain-Python core (no Salt imports).

Each module has one job: ``pack`` (release archives), ``torrent`` (metainfo),
``tracker`` (HTTP tracker), ``profile`` (libtorrent settings), ``swarm``
(seeder and peer), ``release`` (the on-disk release layout), ``config``
(names, event tags and defaults).
"""
