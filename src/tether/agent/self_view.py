"""What /v1/agent/self and /v1/agent/members answer, in Consul's shapes (pure formatting).

Tether has no gossip: a member's liveness comes from the catalog's serfHealth check, its
port is 0 (there is no Serf port), and the protocol fields carry the values of the Consul
release whose API Tether follows, because clients compare them. Tether serves no xDS, so
`xDS` is left out of /v1/agent/self, as a Consul agent with its gRPC port off leaves it out.
"""

from __future__ import annotations

from typing import Any

from tether import __version__

MEMBER_ALIVE, MEMBER_FAILED = 1, 4  # Serf's member status codes, which Consul's API exposes
#: Serf's protocol and delegate versions as a current Consul reports them.
_PROTOCOL = {"ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
             "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4}
#: A coordinate at the origin: Tether computes no network coordinates (Vivaldi's 8 dimensions).
ORIGIN_COORD = {"Vec": [0.0] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1e-05}


def format_member(node: dict[str, Any], status: int, *, server: bool, wan: bool = False) -> dict[str, Any]:
    """One /v1/agent/members element. WAN members are named `<node>.<dc>`, as Consul names them."""
    dc = node.get("Datacenter", "")
    return {"Name": f"{node['Node']}.{dc}" if wan else node["Node"], "Addr": node.get("Address", ""), "Port": 0,
            "Tags": {"dc": dc, "id": node.get("ID", ""), "role": "consul" if server else "node",
                     "build": __version__},
            "Status": status, **_PROTOCOL}


def format_self(config: Any, member: dict[str, Any], *, server: bool, leader_addr: str, dns_addr: str,
                acl_enabled: bool, checks: list[dict[str, Any]], services: int) -> dict[str, Any]:
    """The /v1/agent/self document. Stats values are strings, as Consul's are."""
    return {
        "Config": {"Datacenter": config.datacenter, "PrimaryDatacenter": config.datacenter,
                   "NodeName": config.node, "NodeID": config.node_id, "Server": server,
                   "Version": __version__, "Revision": "tether", "BuildDate": "", "DNSAddr": dns_addr},
        "DebugConfig": {"Datacenter": config.datacenter, "NodeName": config.node, "NodeID": config.node_id,
                        "ServerMode": server, "AdvertiseAddrLAN": config.advertise, "ACLsEnabled": acl_enabled,
                        "NodeMeta": dict(config.node_meta), "DNSAddrs": [f"tcp://{dns_addr}", f"udp://{dns_addr}"]
                        if dns_addr else []},
        "Coord": ORIGIN_COORD,
        "Member": member,
        "Stats": {
            "agent": {"check_monitors": "0", "check_ttls": str(sum(c["Type"] == "ttl" for c in checks)),
                      "checks": str(len(checks)), "services": str(services)},
            "consul": {"server": str(server).lower(), "leader": str(server).lower(), "leader_addr": leader_addr,
                       "known_datacenters": "1", "known_servers": "1", "bootstrap": "false"},
            "runtime": {"version": "python"},
        },
        "Meta": dict(config.node_meta),
    }
