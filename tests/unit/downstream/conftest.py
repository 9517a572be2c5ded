import pytest

from fedsim.downstream import make_downstream_data
from tests.harness import DOWNSTREAM_SIZE, foundation_state, tiny_downstream


@pytest.fixture(scope="package")
def foundation() -> dict:
    return foundation_state()


@pytest.fixture(scope="package")
def data():
    """The tiny downstream set (segmentation images at the run's size)."""
    return make_downstream_data(tiny_downstream(), DOWNSTREAM_SIZE, seed=0)
