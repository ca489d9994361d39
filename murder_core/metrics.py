"""The engine's swarms for Prometheus (``murder: metrics_port``, off by default).

Read at scrape time from the engine's own state, so nothing is counted
twice and an idle engine costs nothing::

    murder_published_releases 3
    murder_swarm_peers{app="shop",release="r7",state="complete"} 41
    murder_swarm_peers{app="shop",release="r7",state="incomplete"} 2
    murder_bytes_served_total{app="shop",release="r7"} 5.36870912e+08
    murder_tracker_announces_total 1.2345e+04
    murder_deploys_total{outcome="succeeded"} 12
"""
import logging

log = logging.getLogger(__name__)


class EngineCollector:
    """A Prometheus collector over one :class:`murder_core.engine.Engine`."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        engine = self.engine
        seeders = list(engine.seeders.items())
        published = GaugeMetricFamily("murder_published_releases", "Published releases the engine seeds")
        published.add_metric([], len(seeders))
        peers = GaugeMetricFamily("murder_swarm_peers", "Peers in a release's swarm on the tracker",
                                  labels=["app", "release", "state"])
        served = CounterMetricFamily("murder_bytes_served", "Payload bytes the engine's seeder sent",
                                     labels=["app", "release"])
        for (app, release), seeder in seeders:
            served.add_metric([app, release], seeder.stats()["uploaded"])
            if engine.tracker is not None:
                try:
                    counts = engine.tracker.swarm(seeder.info.tracker_keys[0])
                except KeyError:
                    continue
                peers.add_metric([app, release, "complete"], counts["complete"])
                peers.add_metric([app, release, "incomplete"], counts["incomplete"])
        announces = CounterMetricFamily("murder_tracker_announces", "Announces the engine's tracker answered")
        announces.add_metric([], engine.tracker.announces if engine.tracker is not None else 0)
        deploys = CounterMetricFamily("murder_deploys", "Deploys the engine ended, by outcome", labels=["outcome"])
        for outcome, count in sorted(engine.outcomes.items()):
            deploys.add_metric([outcome], count)
        running = GaugeMetricFamily("murder_deploys_running", "Deploys running in the engine")
        running.add_metric([], len(engine.deploys))
        return [published, peers, served, announces, deploys, running]


def serve(engine, address, port):
    """Serve the engine's metrics on ``address:port``; return the server (``shutdown()`` stops it)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(EngineCollector(engine))
    server, _ = start_http_server(port, addr=address, registry=registry)
    log.info("murder metrics on http://%s:%s/metrics", address, port)
    return server
