"""Print Label Studio's SSRF ban list with one address carved out: the ML backend's.

Label Studio 1.23 has no allow-list for ML backends: with ``ML_BLOCK_LOCAL_IP=true`` it
refuses every address in its default reserved ranges (loopback, private, link-local …),
which includes the Docker network the backend lives on. Turning the guard off would let any
project admin make Label Studio call internal services. Instead ``compose.yaml`` keeps the
guard on, sets ``USE_DEFAULT_BANNED_SUBNETS=false`` and passes this script's output as
``USER_ADDITIONAL_BANNED_SUBNETS``: the same ranges minus the backend's fixed address, so
Label Studio can reach exactly that address and still no other private one (not PostgreSQL,
not the cloud metadata service at 169.254.169.254).

Usage (re-run and paste into compose.yaml when you change the backend's address)::

    python docker/ssrf_subnets.py 172.28.90.10
"""

from __future__ import annotations

import ipaddress
import sys

# Label Studio 1.23.2, label_studio/core/utils/io.py: validate_ip's default_banned_subnets
# (tests/test_docker.py checks this copy against the installed Label Studio).
LABEL_STUDIO_DEFAULT_BANNED = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "233.252.0.0/24",
    "240.0.0.0/4", "255.255.255.255/32", "::/128", "::1/128", "::ffff:0:0/96",
    "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001:0000::/32",
    "2001:20::/28", "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "ff00::/8",
)  # fmt: skip


def banned_except(allowed: str) -> list[str]:
    """Label Studio's default banned subnets with ``allowed`` (one address) removed.

    Raises:
        ValueError: ``allowed`` is not an IP address, or lies in no banned range (then no
            carve-out is needed and the defaults should stay on).
    """
    address = ipaddress.ip_address(allowed)
    carved = False
    out: list[str] = []
    for text in LABEL_STUDIO_DEFAULT_BANNED:
        net = ipaddress.ip_network(text)
        if net.version == address.version and address in net:
            single = ipaddress.ip_network(f"{address}/{address.max_prefixlen}")
            out.extend(str(n) for n in sorted(net.address_exclude(single)))  # type: ignore[arg-type]
            carved = True
        else:
            out.append(str(net))
    if not carved:
        raise ValueError(f"{allowed} is in no banned range: keep the default ban list")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} BACKEND_IP")
    print(",".join(banned_except(sys.argv[1])))
