"""A loaded config keeps none of the YAML node tree's memory (issue 10: RSS at 10,000 servers).

pymalloc hands a 16 KB pool back only when every object in it is freed. A config that keeps
the tree's strings, or whose objects fill holes left between the tree's nodes, keeps the
whole tree's pools mapped after the load: 90 MB of RSS for a 9 MB config at 10,000 servers
(bench/scale.py has the figures).
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import yaml
from rackwarden.agent import config as configmod

from bench.scale import fleet_yaml, write_fleet


def test_config_keeps_no_object_made_by_the_composer(tmp_path: Path) -> None:
    path, creds = write_fleet(tmp_path, switches=4, ports=12)
    gc.collect()
    tracemalloc.start(30)
    try:
        cfg = configmod.load(path, credentials_dir=creds)
        gc.collect()
        snap = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    composer = Path(yaml.__file__).parent
    kept = [st for st in snap.statistics("traceback")
            if any(Path(f.filename).is_relative_to(composer) for f in st.traceback)]
    assert len(cfg.servers) == 48
    assert sum(st.count for st in kept) == 0, "\n".join(str(st.traceback) for st in kept[:5])
    # The values are the file's: the copies are equal strings.
    srv = cfg.servers[0]
    assert (srv.id, srv.customer, srv.switch, srv.port) == ("srv-00001", "cust-0000", "sw000", "Gi0/1")
    assert cfg.switches["sw001"].name == "sw001"


def test_equal_values_share_one_string(tmp_path: Path) -> None:
    path, creds = write_fleet(tmp_path, switches=2, ports=6)
    cfg = configmod.load(path, credentials_dir=creds)
    # The YAML gives each server its own `customer:` scalar; the config keeps one string.
    same = [s.customer for s in cfg.servers if s.customer == "cust-0001"]
    assert len(same) == 6  # servers 7 to 12
    assert len({id(c) for c in same}) == 1


def test_resolver_memo_leaves_no_object_per_value(tmp_path: Path) -> None:
    """The composer's resolver memo is freed with the loader, between the tree's nodes: one
    small object per distinct value there leaves as many holes, and the config's objects fill
    them (which pins the tree's pools). Only its few dicts may go."""
    loader_cls = configmod._C_LOADER
    if loader_cls is None:  # PyYAML without libyaml: the pure-Python composer has no memo
        return
    text = fleet_yaml(tmp_path, switches=4, ports=48)
    distinct = 192 * 3  # at least: ids, ips, contacts differ per server
    gc.collect()
    tracemalloc.start()
    try:
        loader = loader_cls(text)
        root = loader.get_single_node()
        gc.collect()
        held = tracemalloc.take_snapshot()
        loader.dispose()
        del loader
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert root is not None
    freed = -sum(st.count_diff for st in after.compare_to(held, "filename") if st.count_diff < 0)
    assert freed < distinct // 10, f"{freed} objects freed with the loader"
