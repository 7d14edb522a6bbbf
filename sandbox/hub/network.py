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
