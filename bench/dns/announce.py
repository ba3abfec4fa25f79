#!/usr/bin/env python3
"""Announces many members of one rgap group at once, for the DNS benchmarks.

Each member is one signed 66-byte announcement (version 0x0100, group, timestamp in Unix
microseconds, address as 16 bytes with IPv4 mapped, HMAC-SHA256 over b"RGAP announce" and the
first 34 bytes), sent once over UDP at a bounded rate so that the listener's socket buffer
keeps up. Half the members are IPv4 (10.<n>.x.y), half IPv6 (fd00:<n>::x).

    announce.py --port 18282 --group 2002 --psk <64 hex> --count 100000 [--rate 50000]
"""

import argparse
import hashlib
import hmac
import ipaddress
import socket
import struct
import time


def address_bytes(text):
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return ipaddress.IPv6Address("::ffff:" + text).packed
    return ip.packed


def members(group, count):
    """`count` distinct addresses for `group`: the first half IPv4, the rest IPv6."""
    tag = group % 250 + 1
    v4 = count // 2
    for i in range(v4):
        yield f"{10 + i // 65536}.{tag}.{i // 256 % 256}.{i % 256}"
    for i in range(count - v4):
        yield f"fd00:{tag:x}::{i + 1:x}"


def announcement(key, group, address):
    now_us = int(time.time() * 1_000_000)
    body = struct.pack(">HQq", 0x0100, group, now_us) + address
    return body + hmac.new(key, b"RGAP announce" + body, hashlib.sha256).digest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--group", type=int, required=True)
    parser.add_argument("--psk", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=int, default=50_000, help="announcements per second")
    args = parser.parse_args()
    key = bytes.fromhex(args.psk)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.monotonic()
    for sent, text in enumerate(members(args.group, args.count)):
        # Pace: never ahead of the rate.
        ahead = sent / args.rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
        sock.sendto(announcement(key, args.group, address_bytes(text)), (args.host, args.port))


if __name__ == "__main__":
    main()
