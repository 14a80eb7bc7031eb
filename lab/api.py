"""The lab's operations: up, down, reset, status, and one host's power (for failover drills)."""

from __future__ import annotations

import fcntl
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from lab import acng, image, network, nodes, prereq, sshcfg
from lab.config import NODES_DIR, OUTSIDER, RUN, STATE, inventory_names, node_address, node_names
from lab.image import Overlay
from lab.nodes import Node
from lab.proc import recorded, recorded_keys, run


@contextmanager
def _locked():
    """One lab operation at a time on this machine."""
    prereq.require_root()
    RUN.mkdir(parents=True, exist_ok=True)
    with open(RUN / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _say(msg: str) -> None:
    print(f"lab: {msg}", flush=True)


def _known_names() -> list[str]:
    """Every node this checkout has created (inventory order first, outsider last)."""
    made = {p.name for p in NODES_DIR.glob("*") if (p / "personalized").exists()}
    order = [n for n in inventory_names() if n in made]
    return order + sorted(made - set(order) - {OUTSIDER}) + ([OUTSIDER] if OUTSIDER in made else [])


def _node_keys() -> list[str]:
    return [k for k in recorded_keys() if k != acng.KEY]


def _stop_foreign() -> None:
    """End nodes another checkout left running: the bridge, names and addresses are machine-wide."""
    for name in _node_keys():
        rec = recorded(name) or {}
        if rec.get("repo") not in (None, str(STATE.parent)):
            _say(f"stopping {name} left running by the lab of {rec['repo']}")
            nodes.stop(name)
            root = Path(rec.get("root", ""))
            if root.name == "root" and root.parent.parent.name == "nodes":
                run(["umount", str(root)], check=False)


def _write_ssh(names: list[str]) -> None:
    addrs = {n: node_address(n) for n in names}
    sshcfg.write_known_hosts({n: (addrs[n], Overlay(n).host_keys()) for n in names})
    sshcfg.write_config(addrs)
    sshcfg.install_user_block(addrs)


def _prepare(name: str, pubkey: str, peers: dict[str, str], mirrors: tuple[str, str]) -> None:
    """Mount the node's overlay; personalize it on first use; refresh key and /etc/hosts block."""
    nodes.stop(name)  # clears what a killed earlier run left: stale record, orphan container, cgroups
    ov = Overlay(name)
    ov.mount()
    if not ov.exists():
        ov.personalize(node_address(name), *mirrors)
    ov.refresh(pubkey, peers)


def up(names: list[str] | None = None, outsider: bool = False, fresh: bool = False,
       nodes_count: int | None = None, inventory: str | None = None) -> list[Node]:
    """Boot the lab hosts (default: the inventory's) and return them once SSH and systemd are up.

    Re-runnable: running hosts are kept, half-made ones finished. `fresh` first discards the hosts'
    changes (pristine). Prints cold/warm figures.
    """
    if inventory:
        os.environ["AIRFLOW_HA_INVENTORY"] = str(inventory)
    t0 = time.monotonic()
    with _locked():
        names = list(names or node_names(nodes_count))
        if outsider and OUTSIDER not in names:
            names.append(OUTSIDER)
        addrs = {n: node_address(n) for n in names}  # validates the names
        installed = prereq.ensure_tools()
        prereq.check_forwarding()
        prereq.check_disk(STATE, 0.5)
        _stop_foreign()
        debian, security = image.mirrors()
        built = image.ensure_base(debian, security)
        net = network.ensure_network()
        cache = acng.ensure_running(debian)
        pubkey = sshcfg.ensure_key()
        if fresh:
            for n in names:
                nodes.stop(n)
                Overlay(n).discard()
        all_names = list(dict.fromkeys(_known_names() + names))
        peers = {n: node_address(n) for n in all_names}
        to_boot = [n for n in names if not nodes.launcher(n)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda n: _prepare(n, pubkey, peers, (debian, security)), to_boot))
            _write_ssh(list(dict.fromkeys(_known_names() + names)))
            t_boot = time.monotonic()
            recs = {n: nodes.boot(n, Overlay(n)) for n in to_boot}
            running = {n: nodes.launcher(n) for n in names if n not in recs}
            recs.update(running)
            ready = pool.map(lambda n: nodes.wait_ready(n, addrs[n], recs[n]), names)
            states = dict(zip(names, ready, strict=True))
    total = time.monotonic() - t0
    result = [Node(n, addrs[n], states[n], pid=recs[n]["pid"]) for n in names]
    kind = "cold" if built is not None else "warm"
    parts = [f"{kind} up of {len(names)} host(s) in {total:.1f} s"]
    if installed:
        parts.append(f"installed {' '.join(installed)}")
    if built is not None:
        parts.append(f"base image built in {built:.1f} s")
    parts.append(f"booted {len(to_boot)} in {time.monotonic() - t_boot:.1f} s")
    parts.append(f"bridge {net}, apt cache {cache}")
    _say("; ".join(parts))
    for node in result:
        if node.state != "running":
            _say(f"warning: {node.name} is {node.state} (systemctl --failed on it tells why)")
    return result


def down() -> list[str]:
    """Power every lab host off cleanly, stop the apt cache, remove the bridge and the ssh names."""
    with _locked():
        stopped = []
        names = list(dict.fromkeys(_node_keys() + _known_names()))
        with ThreadPoolExecutor(max_workers=8) as pool:
            for name, ran in zip(names, pool.map(nodes.stop, names), strict=True):
                if ran:
                    stopped.append(name)
        for name in _known_names():
            Overlay(name).umount()
        acng.stop()
        sshcfg.remove_user_block()
        network.remove_bridge()
    _say(f"down: stopped {', '.join(stopped) or 'nothing'}; bridge removed; "
         f"guard and blackhole route kept")
    return stopped


def reset(names: list[str] | None = None, outsider: bool = False,
          nodes_count: int | None = None) -> list[Node]:
    """down, discard every host's changes, up again: pristine hosts (the base image is kept)."""
    down()
    with _locked():
        for name in _known_names():
            Overlay(name).discard()
    return up(names, outsider=outsider, nodes_count=nodes_count)


def status() -> list[Node]:
    """Every known host (the inventory's, plus any other one created or running) and its state."""
    names = list(dict.fromkeys(inventory_names() + _known_names() + _node_keys()))
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda n: nodes.probe(n, node_address(n)), names))


def is_running(name: str) -> bool:
    """True while the host's recorded launcher runs (it may still be booting)."""
    return nodes.launcher(name) is not None


def stop_node(name: str, hard: bool = False) -> bool:
    """Power one host off (cleanly, or `hard`: pull the plug, for failover drills); True if it was running."""
    node_address(name)
    with _locked():
        return nodes.stop(name, hard=hard)


def start_node(name: str) -> Node:
    """Power one host (back) on and wait until it is ready."""
    return up([name])[0]


class Power:
    """The lab's power switch for the failover drills (fabfile/drills.py PowerSwitch)."""

    def off(self, host: str) -> None:
        stop_node(host, hard=True)

    def on(self, host: str) -> None:
        start_node(host)
