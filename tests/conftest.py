import time

import pytest

from realtime import db
from tests import support


@pytest.fixture(scope="session", autouse=True)
def _database():
    db.connect(support.SETTINGS)


@pytest.fixture(autouse=True)
def _test_clock():
    """When the running test began, for reading Kafka from there (support.seek_to_test_start)."""
    support.test_started_at = time.time()


@pytest.fixture
def clients():
    """Factory of connected clients, all closed after the test."""
    made = []

    def make(*args, **kwargs) -> support.Client:
        client = support.Client(*args, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture(scope="session")
def gevent_nodes():
    """Two edge nodes on gevent, beside the stack's eventlet nodes."""
    procs = [support.start_edge(5011, "gtest1", {"EDGE_ASYNC_MODE": "gevent"}),
             support.start_edge(5012, "gtest2", {"EDGE_ASYNC_MODE": "gevent"})]
    yield ("http://127.0.0.1:5011", "http://127.0.0.1:5012")
    for proc in procs:
        support.stop_process(proc)


@pytest.fixture(params=["eventlet", "gevent"])
def nodes(request):
    """(first node URL, second node URL) for each async mode the edge supports."""
    if request.param == "eventlet":
        return (support.EDGE1, support.EDGE2)
    return request.getfixturevalue("gevent_nodes")
