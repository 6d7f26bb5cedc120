#!/usr/bin/env python3
"""A real two-node Ray cluster on this machine, on loopback only, for the tests and benchmarks.

    python3 scripts/ray_cluster.py start [--dir DIR] [--head-cpus 1] [--worker-cpus 1] [--nodes 2]
    python3 scripts/ray_cluster.py address [--dir DIR]      # prints 127.0.0.1:PORT
    python3 scripts/ray_cluster.py sockets [--dir DIR]      # exit 1 on a non-loopback listening socket
    python3 scripts/ray_cluster.py stop [--dir DIR]

``start`` launches a *keeper* process (a daemon, in its own session) and returns once the cluster
is up; it prints the cluster's address and records it, with every PID, in ``DIR/cluster.json``
(default ``DIR``: ``/tmp/metaweight-ray-ci``). The keeper

- starts the head node with ``ray start --head --node-ip-address=127.0.0.1`` and each further node
  with ``ray start --address=127.0.0.1:PORT --node-ip-address=127.0.0.1``, every one with an explicit
  ``--num-cpus``, a small object store, the dashboard off, usage statistics off and Ray's files
  under ``DIR`` (so nothing collides with a user's own Ray in ``/tmp/ray``);
- starts each ``ray start`` as the leader of a new session, so every process it spawns (GCS,
  raylet, agents, the workers, which Ray moves to process groups of their own) carries that
  session's ID, and is their *child subreaper*, so every Ray process of the cluster stays its
  descendant and is reaped by it (no zombie, whatever PID 1 is);
- on ``stop`` (SIGTERM to the keeper), sends SIGTERM to every process of those sessions, then
  SIGKILL after ``--grace`` seconds (Ray's GCS can ignore SIGTERM for minutes), reaps them and
  exits. Nothing else is signalled: not ``ray stop``, which stops every Ray cluster of the machine.

Loopback only: Ray turns ``--node-ip-address=127.0.0.1`` into the machine's outward address unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (then its servers bind 127.0.0.1), and with that variable
``ray start`` refuses to join a second node. The cluster's processes therefore all run with the
variable set, and the second node's ``ray start`` runs through this script (``ray-cli``), which
turns off only that refusal and the 127.0.0.1 rewriting in its own process. A driver connecting to
this cluster needs the variable too, and ``RAY_AUTH_MODE=disabled`` (see ``LOOPBACK_ENV``;
``scripts/test.sh`` and ``python/tests/conftest.py`` set both);
``sockets`` lists what the cluster's processes listen on and fails on any non-loopback address.

The environment of ``start`` (``PYTHONPATH`` included) is the environment of every Ray worker.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_DIR = "/tmp/metaweight-ray-ci"
STATE = "cluster.json"
#: The environment of every process of the cluster (and what a driver connecting to it needs):
#: 127.0.0.1 kept as the nodes' address; no usage statistics; token authentication off, so that a
#: token in ~/.ray/auth_token (Ray 2.60 writes one on a local ``ray.init()``) neither switches it on
#: for one node and not the other nor keeps a driver out. Everything listens on loopback only.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
PR_SET_CHILD_SUBREAPER = 36


def _ray_cli(argv: list[str]) -> None:
    """``ray ARGV`` with Ray's 127.0.0.1 → outward-IP rewriting and its refusal of a second node
    under ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` turned off, in this process only."""
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services

    ray_constants.ENABLE_RAY_CLUSTER = True
    services.resolve_ip_for_localhost = lambda host: host
    from ray.scripts.scripts import main

    sys.argv = ["ray", *argv]
    main()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _session_pids(sids: list[int]) -> list[int]:
    """The live (not zombie) processes of the sessions ``sids`` (each ``ray start`` is started as
    a session leader; Ray's workers move to process groups of their own but stay in the session)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) in sids:
            out.append(int(entry))
    return sorted(out)


def _signal_all(sids: list[int], sig: int) -> None:
    """Sends ``sig`` to every live process of the sessions ``sids``."""
    for pid in _session_pids(sids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _reap_all(timeout: float) -> None:
    """Reaps children until none is left: a dead raylet's workers become this subreaper's children
    only once the raylet itself is reaped, so one pass is not enough."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def _write_state(directory: Path, state: dict[str, Any]) -> None:
    tmp = directory / f".{STATE}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, directory / STATE)


def _keeper(args: argparse.Namespace) -> int:
    """The daemon: starts the nodes, records them, waits for SIGTERM, stops exactly them."""
    directory = Path(args.dir)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # Ray's workers use SIGINT for KeyboardInterrupt; a shell that ignores SIGINT passes that on.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    stop = False

    def on_term(_sig: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    env = {**os.environ, **LOOPBACK_ENV}
    port = args.port or _free_port()
    address = f"127.0.0.1:{port}"
    common = [
        "--node-ip-address=127.0.0.1",
        "--disable-usage-stats",
        f"--object-store-memory={args.object_store_mb * 1024 * 1024}",
        "--dashboard-host=127.0.0.1",
    ]
    sids: list[int] = []
    log = open(directory / "ray_start.log", "ab")  # noqa: SIM115 - kept open for the children
    nodes = [
        [
            sys.executable,
            "-c",
            "from ray.scripts.scripts import main; import sys; sys.argv[0] = 'ray'; main()",
            "start",
            "--head",
            f"--port={port}",
            f"--num-cpus={args.head_cpus}",
            "--include-dashboard=false",
            f"--temp-dir={directory}",
            *common,
        ]
    ] + [
        [
            sys.executable,
            os.path.abspath(__file__),
            "ray-cli",
            "start",
            f"--address={address}",
            f"--num-cpus={args.worker_cpus}",
            *common,
        ]
        for _ in range(args.nodes - 1)
    ]
    ok = True
    for cmd in nodes:
        if stop:
            ok = False
            break
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        sids.append(p.pid)
        if p.wait() != 0:
            ok = False
            break
    state = {
        "address": address,
        "keeper_pid": os.getpid(),
        "sessions": sids,
        "pids": _session_pids(sids),
        "dir": str(directory),
        "ok": ok and not stop,
    }
    _write_state(directory, state)
    while not stop and ok:
        _reap()  # Ray's processes as they exit (this is their subreaper)
        time.sleep(0.5)
    # Stop exactly the sessions started above: SIGTERM, then SIGKILL after the grace period.
    for sig, wait in ((signal.SIGTERM, args.grace), (signal.SIGKILL, 10.0)):
        _signal_all(sids, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _session_pids(sids):
            _reap()
            time.sleep(0.1)
        _reap()
        if not _session_pids(sids):
            break
    _reap_all(10.0)
    log.close()
    state["stopped"] = not _session_pids(sids)
    _write_state(directory, state)
    return 0 if state["stopped"] else 1


def _read_state(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / STATE).read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _options(args: argparse.Namespace) -> list[str]:
    return [
        f"--dir={args.dir}",
        f"--nodes={args.nodes}",
        f"--head-cpus={args.head_cpus}",
        f"--worker-cpus={args.worker_cpus}",
        f"--port={args.port}",
        f"--object-store-mb={args.object_store_mb}",
        f"--grace={args.grace}",
    ]


def start(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    old = _read_state(directory)
    if old is not None and _alive(int(old.get("keeper_pid", 0))):
        print(f"a cluster is already running from {directory} at {old['address']}", file=sys.stderr)
        return 1
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (directory / STATE).unlink()
    keeper = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "keeper", *_options(args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(directory / "keeper.log", "ab"),  # noqa: SIM115
        start_new_session=True,
    )
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        state = _read_state(directory)
        if state is not None and state.get("keeper_pid") == keeper.pid:
            if not state["ok"]:
                keeper.terminate()
                keeper.wait()
                sys.stderr.write((directory / "ray_start.log").read_text(errors="replace")[-4000:])
                print("\nthe Ray cluster did not start", file=sys.stderr)
                return 1
            print(state["address"])
            return 0
        if keeper.poll() is not None:
            break
        time.sleep(0.2)
    keeper.terminate()
    keeper.wait()
    print(f"the Ray cluster did not start within {args.timeout:.0f} s (see {directory})", file=sys.stderr)
    return 1


def stop(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    state = _read_state(directory)
    if state is None:
        print(f"no cluster recorded in {directory}", file=sys.stderr)
        return 0
    pid = int(state["keeper_pid"])
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.grace + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    left = _session_pids([int(g) for g in state["sessions"]])
    if left:  # the keeper died without stopping them: stop them here
        _signal_all([int(g) for g in state["sessions"]], signal.SIGKILL)
        time.sleep(0.5)
        left = _session_pids([int(g) for g in state["sessions"]])
    if left:
        print(f"still running: {left}", file=sys.stderr)
        return 1
    print(f"stopped the Ray cluster at {state['address']}")
    return 0


def _inodes(pids: list[int]) -> dict[str, int]:
    """Socket inode → PID for the open file descriptors of ``pids``."""
    out: dict[str, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        out[target[8:-1]] = pid
    return out


def _addr(hex_addr: str) -> str:
    """``/proc/net/tcp{,6}``'s address as text (IPv4-mapped IPv6 shown as IPv4)."""
    ip_hex, port_hex = hex_addr.split(":")
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        ip = socket.inet_ntop(socket.AF_INET6, words)
        if ip.startswith("::ffff:") and "." in ip:
            ip = ip[7:]
    return f"{ip}:{int(port_hex, 16)}"


def process_sockets(pids: list[int]) -> list[tuple[int, str, str, str, str]]:
    """(pid, protocol, state, local address, remote address) of every TCP and UDP socket that a
    process of ``pids`` holds (state ``LISTEN``, ``ESTABLISHED``, ... as in ``/proc/net/tcp``)."""
    inodes = _inodes(pids)
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        with contextlib.suppress(OSError), open(f"/proc/net/{proto}", encoding="ascii") as f:
            next(f)
            for line in f:
                parts = line.split()
                local, remote, state, inode = parts[1], parts[2], parts[3], parts[9]
                if inode in inodes:
                    name = _TCP_STATES.get(state, state) if proto.startswith("tcp") else "UDP"
                    found.append((inodes[inode], proto, name, _addr(local), _addr(remote)))
    return sorted(found)


_TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


def cluster_pids(directory: str | os.PathLike[str]) -> list[int]:
    """The live processes of the cluster recorded in ``directory`` (empty when none)."""
    state = _read_state(Path(directory))
    return _session_pids([int(g) for g in state["sessions"]]) if state else []


def is_loopback(address: str) -> bool:
    """Whether ``HOST:PORT`` is on a loopback address (127.0.0.0/8 or ::1); a socket's unbound
    remote end (``0.0.0.0:0``, ``:::0``) does not count as an address."""
    host = address.rsplit(":", 1)[0]
    return host == "::1" or host.startswith("127.")


def _unbound(address: str) -> bool:
    return address in ("0.0.0.0:0", ":::0", "::0")


def sockets(args: argparse.Namespace) -> int:
    pids = cluster_pids(args.dir)
    if not pids:
        print(f"no running cluster recorded in {args.dir}", file=sys.stderr)
        return 2
    bad = 0
    for pid, proto, state, local, remote in process_sockets(pids):
        ok = is_loopback(local) and (_unbound(remote) or is_loopback(remote))
        bad += not ok
        print(f"{'ok ' if ok else 'BAD'} {pid:>7} {proto:<4} {state:<11} {local:<22} {remote}")
    print(f"{len(pids)} processes; {bad} sockets on or to a non-loopback address")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ray-cli"]:
        _ray_cli(argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["start", "stop", "address", "sockets", "keeper"])
    ap.add_argument("--dir", default=os.environ.get("METAWEIGHT_RAY_DIR", DEFAULT_DIR))
    ap.add_argument("--nodes", type=int, default=2, help="nodes, the head included (default 2)")
    ap.add_argument("--head-cpus", type=int, default=1)
    ap.add_argument("--worker-cpus", type=int, default=1)
    ap.add_argument("--port", type=int, default=0, help="the head's GCS port (default: a free one)")
    ap.add_argument("--object-store-mb", type=int, default=256)
    ap.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for start")
    args = ap.parse_args(argv)
    if args.command == "keeper":
        return _keeper(args)
    if args.command == "start":
        return start(args)
    if args.command == "stop":
        return stop(args)
    if args.command == "sockets":
        return sockets(args)
    state = _read_state(Path(args.dir))
    if state is None or not _alive(int(state["keeper_pid"])):
        print(f"no running cluster recorded in {args.dir}", file=sys.stderr)
        return 1
    print(state["address"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
