"""The notebooks' Docker network: internal, no inter-container traffic, host cut off.

``internal=True`` removes the default route (no internet) but the bridge's own address
is the host, where every service listening on 0.0.0.0 answers. So INPUT from the
bridge is dropped except replies and the two ports containers need: the hub API and
the gateway. ``enable_icc=false`` stops one user's container from reaching another's.
"""

from __future__ import annotations

import subprocess

import docker

NETWORK = "dsb-notebooks"
CHAIN = "DSB-NOTEBOOKS"
BRIDGE = "br-dsbnb"


def ensure_network(client: docker.DockerClient, subnet: str = "172.30.77.0/24",
                   gateway_ip: str = "172.30.77.1") -> str:
    """Create the network once; return the host's address on it (hub and gateway bind here)."""
    try:
        client.networks.get(NETWORK)
    except docker.errors.NotFound:
        pool = docker.types.IPAMPool(subnet=subnet, gateway=gateway_ip)
        client.networks.create(
            NETWORK, driver="bridge", internal=True,
            ipam=docker.types.IPAMConfig(pool_configs=[pool]),
            options={"com.docker.network.bridge.enable_icc": "false",
                     "com.docker.network.bridge.name": BRIDGE})
    return gateway_ip


def firewall(allowed_ports: list[int]) -> None:
    """(Re)write the INPUT rules for the bridge: replies and ``allowed_ports`` only."""
    def run(*args: str, check: bool = True) -> int:
        return subprocess.run(["iptables", "-w", *args], check=check,  # noqa: S603,S607
                              capture_output=True).returncode

    if run("-N", CHAIN, check=False) != 0:
        run("-F", CHAIN)
    run("-A", CHAIN, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
    for port in allowed_ports:
        run("-A", CHAIN, "-p", "tcp", "--dport", str(port), "-j", "ACCEPT")
    run("-A", CHAIN, "-j", "DROP")
    if run("-C", "INPUT", "-i", BRIDGE, "-j", CHAIN, check=False) != 0:
        run("-I", "INPUT", "1", "-i", BRIDGE, "-j", CHAIN)
    # Docker (20.10) still gives containers on an internal network a default route via
    # the host; its isolation rules drop the forwarded packets, and so does this rule,
    # whatever Docker's own chains look like after a daemon restart.
    if run("-C", "DOCKER-USER", "-i", BRIDGE, "-j", "DROP", check=False) != 0:
        run("-I", "DOCKER-USER", "1", "-i", BRIDGE, "-j", "DROP", check=False)


# -- the same guard for a docker-compose stack ------------------------------------------
#
# In a stack the hub and the gateway are containers on the notebooks network, not
# processes on the host. The network is made by compose (internal, enable_icc=false,
# a fixed bridge name); ``guard`` then lets traffic between a notebook and the hub or the
# gateway through (Docker's icc=false rule would drop it) and cuts the host off, and
# ``unguard`` takes every rule away again when the stack stops. It runs in a small
# service of the stack with ``network_mode: host`` and NET_ADMIN (docker-compose.yml).


def _iptables(*args: str, check: bool = True) -> int:
    return subprocess.run(["iptables", "-w", *args], check=check,  # noqa: S603,S607
                          capture_output=True).returncode


def _guard_rules(bridge: str, peers: list[str]) -> list[tuple[str, ...]]:
    """DOCKER-USER rules, in order: notebook <-> peers only, nothing else off the bridge."""
    tag = ("-m", "comment", "--comment", f"dsb-guard:{bridge}")
    rules: list[tuple[str, ...]] = []
    for peer in peers:
        rules.append(("-i", bridge, "-o", bridge, "-d", peer, *tag, "-j", "ACCEPT"))
        rules.append(("-i", bridge, "-o", bridge, "-s", peer, *tag, "-j", "ACCEPT"))
    rules.append(("-i", bridge, *tag, "-j", "DROP"))
    return rules


def guard(bridge: str, peers: list[str]) -> None:
    """Install the rules for ``bridge`` (idempotent: earlier ones are replaced)."""
    unguard(bridge)
    chain = f"DSB-{bridge}"[:28]
    _iptables("-N", chain)
    _iptables("-A", chain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
    _iptables("-A", chain, "-j", "DROP")
    _iptables("-I", "INPUT", "1", "-i", bridge, "-j", chain)
    for position, rule in enumerate(_guard_rules(bridge, peers), start=1):
        _iptables("-I", "DOCKER-USER", str(position), *rule)


def unguard(bridge: str) -> None:
    """Remove every rule ``guard`` installed for ``bridge``; missing ones are fine."""
    chain = f"DSB-{bridge}"[:28]
    while _iptables("-D", "INPUT", "-i", bridge, "-j", chain, check=False) == 0:
        pass
    for rule in _installed_guard_rules(bridge):
        _iptables("-D", "DOCKER-USER", *rule, check=False)
    if _iptables("-F", chain, check=False) == 0:
        _iptables("-X", chain, check=False)


def _installed_guard_rules(bridge: str) -> list[tuple[str, ...]]:
    listing = subprocess.run(["iptables", "-w", "-S", "DOCKER-USER"],  # noqa: S603,S607
                             capture_output=True, text=True, check=False).stdout
    marker = f"dsb-guard:{bridge}"
    # `-S` quotes the comment; the words are given back to iptables without the shell.
    return [tuple(word.strip('"') for word in line.split()[2:]) for line in listing.splitlines()
            if line.startswith("-A DOCKER-USER") and marker in line]


def main(argv: list[str] | None = None) -> None:
    """``python -m sandbox.hub.network BRIDGE PEER...``: guard until SIGTERM, then unguard."""
    import argparse
    import signal
    import threading

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("bridge", help="Linux bridge of the notebooks network")
    parser.add_argument("peers", nargs="+", help="Addresses notebooks may reach (hub, gateway)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    guard(args.bridge, args.peers)
    print(f"guarding {args.bridge}: notebooks reach {', '.join(args.peers)} only", flush=True)
    try:
        stop.wait()
    finally:
        unguard(args.bridge)
        print(f"removed the rules for {args.bridge}", flush=True)


if __name__ == "__main__":
    main()
