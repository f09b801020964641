"""One multi-host rig (3 compute nodes, an object store node, Spark standalone, sshd) for
every test in this folder; torn down at the end whatever happened."""
import pytest

from tests.multihost.rig import Rig


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/multihost/" in str(item.fspath):
            item.add_marker(pytest.mark.multihost)


@pytest.fixture(scope="session")
def rig(tmp_path_factory):
    rig = Rig("pipeline-test-rig", tmp_path_factory.mktemp("rig"))
    try:
        rig.up()
        yield rig
    finally:
        rig.down()
