"""``fedsim list``: every printed catalogue is the registry or constant it comes from."""

from __future__ import annotations

import re

import pytest

from fedsim.cli import main
from tests.harness import REPO


def _catalogues(text: str) -> dict[str, list[tuple[str, str]]]:
    """`## KIND` headings and their `- `name` — about` bullets."""
    out: dict[str, list[tuple[str, str]]] = {}
    for line in text.splitlines():
        if line.startswith("## "):
            current = out.setdefault(line[3:], [])
        elif line.startswith("- "):
            name, _, about = re.match(r"- `([^`]+)`( — (.*))?$", line).group(1, 2, 3)
            current.append((name, about or ""))
    return out


def test_each_catalogue_is_its_source(capsys):
    from fedsim.algorithms import REGISTRY
    from fedsim.compression import CODEC_KINDS
    from fedsim.config import AGGREGATIONS, SCENARIOS
    from fedsim.config.medmnist import FLAGS
    from fedsim.data import DOMAINS, KINDS, PARTITIONS
    from fedsim.emd import WEIGHTINGS
    from fedsim.models import MODEL_NAMES
    from fedsim.netmodel.overlays import EXTRA_KINDS, OVERLAY_KINDS
    from fedsim.privacy import PRIVACY_MODES
    from fedsim.topology import MAKE_KINDS

    assert main(["list"]) == 0
    got = {kind: [name for name, _ in entries] for kind, entries in _catalogues(capsys.readouterr().out).items()}
    assert got == {
        "algorithms": list(REGISTRY),
        "aggregations": list(AGGREGATIONS),
        "scenarios": list(SCENARIOS),
        "models": list(MODEL_NAMES),
        "topologies": sorted(p.stem for p in (REPO / "fedsim" / "topologies").glob("*.yaml")),
        "generators": [f"{kind}:N" for kind in MAKE_KINDS],
        "data": list(KINDS),
        "medmnist": list(FLAGS),
        "partitions": list(PARTITIONS),
        "domains": list(DOMAINS),
        "emd": list(WEIGHTINGS),
        "codecs": list(CODEC_KINDS),
        "privacy": list(PRIVACY_MODES),
        "overlays": [*OVERLAY_KINDS, *EXTRA_KINDS],
    }
    for kind, name in (("emd", "sinkhorn"), ("topologies", "gaia"), ("algorithms", "fedefm_released")):
        assert main(["list", kind]) == 0  # one catalogue alone
        alone = _catalogues(capsys.readouterr().out)
        assert list(alone) == [kind] and name in [n for n, _ in alone[kind]]


def test_algorithms_show_their_default_and_supported_scenarios(capsys):
    from fedsim.algorithms import algorithm_class

    assert main(["list", "algorithms"]) == 0
    for name, about in _catalogues(capsys.readouterr().out)["algorithms"]:
        algo = algorithm_class(name)
        default = re.search(r"default scenario (\w+)", about).group(1)
        scenarios = re.search(r"; scenarios ([\w, ]+);", about).group(1).split(", ")
        assert default == algo.natural_scenario and default in scenarios
        assert set(scenarios) == {algo.natural_scenario, *algo.scenarios}, name
    # the gaia network of the topology benchmarks: 11 silos
    assert main(["list", "topologies"]) == 0
    assert dict(_catalogues(capsys.readouterr().out)["topologies"])["gaia"].startswith("11 silos")


def test_an_unknown_catalogue_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["list", "recipes"])
    assert exc.value.code == 2
