"""salt-run's Ctrl-C while it follows a deploy: noted by a flag, so Salt's event reading cannot swallow it."""
import importlib.util
import os
import pathlib
import signal
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("murder_runner_under_test", REPO / "_runners" / "murder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def leaked():
    """Signals that reached the handler in place before the runner's: none may, while it follows."""
    seen = []
    previous = {signum: signal.signal(signum, lambda signum, frame: seen.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    yield seen
    for signum, handler in previous.items():
        signal.signal(signum, handler)


class SilentBus:
    """A bus with nothing on it: each read waits its time and finds nothing, as Salt's does."""

    def __init__(self):
        self.reads = 0

    def get_event(self, wait, tag, full):  # pylint: disable=unused-argument
        self.reads += 1
        time.sleep(min(wait, 0.05))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_following_is_noted_not_raised_and_the_old_handler_comes_back(runner, leaked, signum):
    before = signal.getsignal(signum)
    with runner._Interrupt() as interrupt:
        os.kill(os.getpid(), signum)
        assert interrupt.signum == signum and leaked == []
    assert signal.getsignal(signum) is before
    os.kill(os.getpid(), signum)
    assert leaked == [signum]


def test_reading_the_bus_stops_at_once_when_interrupted(runner, leaked):
    bus = SilentBus()
    with runner._Interrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        assert runner._next(bus, "murder/deploy/x/", time.monotonic() + 30, interrupt) is None
    assert bus.reads == 0 and leaked == []


def test_following_returns_none_when_interrupted_between_reads(runner, leaked):
    class InterruptingBus(SilentBus):
        def get_event(self, wait, tag, full):
            super().get_event(wait, tag, full)
            os.kill(os.getpid(), signal.SIGINT)  # arrives while Salt reads the bus

    bus = InterruptingBus()
    assert runner._follow(bus, "x", time.monotonic() + 30) is None
    assert bus.reads == 1 and leaked == []
