"""``engine.Engine`` without a master: its bus is a list, its minions are answers it is given.

The tracker and seeders are real (libtorrent on loopback); only Salt is left out.
"""
import time

import pytest

from murder_core import config, engine as engine_core
from murder_core.store import Store

SETTINGS = dict(config.DEFAULTS, seeder_address="127.0.0.1", tracker_port=0, keep_published=2)


class Bus:
    def __init__(self):
        self.fired = []

    def __call__(self, tag, data):
        self.fired.append((tag, data))

    def tagged(self, prefix):
        return [data for tag, data in self.fired if tag.startswith(prefix)]


@pytest.fixture
def running(tmp_path):
    bus = Bus()
    activations = []

    def activate(minions, kwargs, timeout):
        activations.append((minions, kwargs))
        return {m: {"ret": {"old": None, "new": kwargs["release"], "comment": "ok"}, "retcode": 0} for m in minions}

    engine = engine_core.Engine(settings=SETTINGS, store=str(tmp_path / "store"), address="127.0.0.1", fire=bus,
                                expected_minions=lambda tgt, tgt_type: ["m1", "m2"], activate=activate)
    engine.start()
    yield engine, bus, activations
    engine.stop()


def source(tmp_path, name):
    path = tmp_path / name
    path.mkdir()
    (path / "app.txt").write_text(name)
    return str(path)


def run_until(engine, done, deadline_seconds=60):
    # A count of passes was a race: the engine has several workers, so a no-op on an idle one returned
    # at once while another still packed, and 500 passes could be over first (seen once in CI).
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        engine.tick()
        if done():
            return
        time.sleep(0.01)  # a poll of the engine's own loop, bounded by the deadline
    pytest.fail("the engine did not get there")


def test_a_publish_request_is_answered_and_seeded(running, tmp_path):
    engine, bus, _ = running
    engine.handle(config.TAG_ENGINE_REQUEST, {"request_id": "abc", "action": "publish",
                                              "arguments": {"source": source(tmp_path, "v1"), "app": "shop",
                                                            "release": "r1"}})
    run_until(engine, lambda: bus.tagged("murder/engine/reply/abc"))
    answer = bus.tagged("murder/engine/reply/abc")[0]
    assert answer["result"] is True and answer["release"] == "r1" and ("shop", "r1") in engine.seeders
    assert Store(engine.store.root).get("shop", "r1").sha256 == answer["sha256"]


def test_a_deploy_runs_from_request_to_activation(running, tmp_path):
    engine, bus, activations = running
    engine.handle(config.TAG_DEPLOY_REQUEST, {"source": source(tmp_path, "v1"), "app": "shop", "tgt": "m*",
                                              "release": "r1", "_stamp": "now"})
    run_until(engine, lambda: bus.tagged("murder/deploy/shop-r1-") and engine.deploys and
              next(iter(engine.deploys.values())).deploy.state == "distributing")
    start = [data for tag, data in bus.fired if tag.endswith("/start")][0]
    assert start["minions"] == ["m1", "m2"] and start["peer"]["release"] == "r1"
    deploy_id = start["deploy_id"]
    for minion in ("m1", "m2"):
        engine.handle(f"murder/peer/{deploy_id}/{minion}/done", {"id": minion, "data": {"seconds": 1.0}})
    run_until(engine, lambda: bus.tagged(f"murder/deploy/{deploy_id}/complete"))
    complete = bus.tagged(f"murder/deploy/{deploy_id}/complete")[0]
    assert complete["result"] is True and activations == [(["m1", "m2"], {"app": "shop", "release": "r1",
                                                                           "keep": SETTINGS["keep"]})]
    assert engine.store.deploy(deploy_id)["state"] == "succeeded"


@pytest.mark.bad_input
def test_requests_from_minions_are_ignored_and_unknown_keys_refused(running, tmp_path):
    engine, bus, _ = running
    asked = {"source": source(tmp_path, "v1"), "app": "shop", "tgt": "m*"}
    engine.handle(config.TAG_DEPLOY_REQUEST, {"id": "m1", "data": asked})  # fired by a minion
    engine.handle(config.TAG_ENGINE_REQUEST, {"id": "m1", "request_id": "x", "action": "deploy", "arguments": asked})
    assert bus.fired == [] and engine.deploys == {}
    engine.handle(config.TAG_DEPLOY_REQUEST, dict(asked, relase="r1"))
    refused = bus.tagged("murder/deploy/")[0]
    assert refused["state"] == "refused" and "relase (did you mean release?)" in refused["error"]
    assert engine.store.deploy(refused["deploy_id"])["state"] == "refused"


def test_a_restarted_engine_fails_the_deploy_it_lost_and_seeds_again(tmp_path):
    store = str(tmp_path / "store")
    first_bus, second_bus = Bus(), Bus()
    kwargs = dict(settings=SETTINGS, store=store, address="127.0.0.1",
                  expected_minions=lambda tgt, tgt_type: ["m1"], activate=lambda *a: {})
    first = engine_core.Engine(fire=first_bus, **kwargs).start()
    try:
        first.handle(config.TAG_DEPLOY_REQUEST, {"source": source(tmp_path, "v1"), "app": "shop", "tgt": "m1",
                                                 "release": "r1"})
        run_until(first, lambda: any(tag.endswith("/start") for tag, _ in first_bus.fired))
    finally:
        first.stop()  # as if it died: the deploy is still recorded as distributing
    second = engine_core.Engine(fire=second_bus, **kwargs).start()
    try:
        lost = second_bus.tagged("murder/deploy/")[0]
        assert lost["state"] == "failed" and "the murder engine stopped during this deploy" in lost["error"]
        assert ("shop", "r1") in second.seeders
    finally:
        second.stop()


def _places_failing(minions):
    raise OSError("the minion data cache is unreadable")


@pytest.mark.parametrize("places, rack_split, racks", [
    (lambda minions: {"m1": "dc/a", "m2": "dc/b"}, True, {"dc/a": ["m1"], "dc/b": ["m2"]}),
    (lambda minions: {"m1": "dc/a", "m2": "dc/b"}, False, None),  # rack_split off: one session a peer
    (lambda minions: {"m1": "dc/a", "m2": "dc/a"}, True, None),  # one rack: nothing to split
    (_places_failing, True, None),  # the deploy goes on without a split
])
def test_the_start_event_carries_the_racks_the_master_knows(tmp_path, places, rack_split, racks):
    bus = Bus()
    engine = engine_core.Engine(settings=dict(SETTINGS, rack_split=rack_split), store=str(tmp_path / "store"),
                                address="127.0.0.1", fire=bus, expected_minions=lambda tgt, tgt_type: ["m1", "m2"],
                                activate=lambda *a: {}, places=places).start()
    try:
        engine.handle(config.TAG_DEPLOY_REQUEST, {"source": source(tmp_path, "v1"), "app": "shop", "tgt": "m*",
                                                  "release": "r1"})
        run_until(engine, lambda: any(tag.endswith("/start") for tag, _ in bus.fired))
        start = [data for tag, data in bus.fired if tag.endswith("/start")][0]
        assert start["peer"].get("racks") == racks
    finally:
        engine.stop()
