"""`LoopbackCluster`: a real multi-node Ray cluster on this machine, every port on 127.0.0.1.

What the two-node test (tests/test_ray_runs.py) and `bench.parallel --ray` run a study on: a head node and
worker nodes, each with its own raylet, object store and worker processes, joined over TCP exactly as
machines join a real cluster (docs/ray.md). Nothing here imports torch.

Loopback, and only loopback, because of Ray's traps (shared/environment.md):

1. Ray rewrites the address 127.0.0.1 to the machine's routable IP, and then listens on every interface,
   unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is set, in every node's environment and in the driver's
   (before `import ray`: Ray reads it once, at import).
2. RAY_AUTH_MODE=disabled keeps it from writing a token to ~/.ray/auth_token.
3. A fresh, short temp dir per cluster: Ray's socket paths must fit 107 bytes, and a stale
   `ray_current_cluster` file sends a later `ray.init()` to a dead cluster.
4. Two nodes on one machine would both take Ray's fixed default ports: each gets free ones.

The head is `ray start --head --block`. A worker node cannot be `ray start --address=… --block`: with
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 that command refuses to join a cluster ("not supported on Windows and
OSX"), and without it, it joins on the routable IP, listening on every interface. So a worker node is
`python -m proxy_runs.ray_cluster worker-node …`, which starts the node as `ray start` does once past its
checks (`ray._private.node.Node`, a Ray internal: tests/test_ray_runs.py notices when it changes). Either
way each node is a process of its own session that, on SIGTERM, shuts down exactly the processes it
started. `ray stop` is not used: it stops every Ray process of this user on the machine, other people's
clusters included.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
LOOPBACK_ENVIRONMENT = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
OBJECT_STORE_BYTES = 100_000_000  # per node; proxy runs pass records, not tensors (Ray's floor is 75 MB)
START_SECONDS = 90.0  # a node joins in 4-10 s on 2 cores; more when the machine is busy
STOP_SECONDS = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def use_loopback_environment() -> None:
    """Make this process a driver of a loopback cluster (module docstring); before `import ray`."""
    os.environ.update(LOOPBACK_ENVIRONMENT)
    ray = sys.modules.get("ray")
    if ray is not None and ray._private.ray_constants.ENABLE_RAY_CLUSTER:
        raise RuntimeError(
            "ray was imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set, so it would leave "
            "loopback; call proxy_runs.ray_cluster.use_loopback_environment() before importing ray"
        )


@dataclass(frozen=True)
class NodePorts:
    """Ports of one node's own processes: Ray's defaults are fixed, and two nodes on a machine would clash."""

    node_manager: int = field(default_factory=free_port)
    object_manager: int = field(default_factory=free_port)
    agent_http: int = field(default_factory=free_port)
    agent_grpc: int = field(default_factory=free_port)
    runtime_env_agent: int = field(default_factory=free_port)
    metrics_export: int = field(default_factory=free_port)

    def flags(self) -> list[str]:
        return [
            f"--node-manager-port={self.node_manager}",
            f"--object-manager-port={self.object_manager}",
            f"--dashboard-agent-listen-port={self.agent_http}",
            f"--dashboard-agent-grpc-port={self.agent_grpc}",
            f"--runtime-env-agent-port={self.runtime_env_agent}",
            f"--metrics-export-port={self.metrics_export}",
            "--min-worker-port=0",  # 0 and 0: each worker process on a port the system picks
            "--max-worker-port=0",
        ]


def ray_command() -> str:
    """The `ray` script next to this interpreter, so every node runs the same Python and packages."""
    script = Path(sys.executable).with_name("ray")
    return str(script) if script.exists() else "ray"


@dataclass
class LoopbackCluster:
    """A head node and `nodes - 1` worker nodes with `cpus_per_node` CPUs each; `address` is the head's
    GCS address ("127.0.0.1:PORT") to pass to `ray.init` or `RayRunner`."""

    nodes: int = 2
    cpus_per_node: int = 1
    port: int = field(default_factory=free_port)
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp")))
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> None:
        head = [
            ray_command(),
            "start",
            "--head",
            "--block",
            f"--port={self.port}",
            "--include-dashboard=false",
        ]
        self._start_node([*head, *self._node_flags(), "--disable-usage-stats"])
        self._wait_for_head()
        for _ in range(self.nodes - 1):
            worker = [
                sys.executable,
                "-m",
                "proxy_runs.ray_cluster",
                "worker-node",
                f"--address={self.address}",
            ]
            self._start_node([*worker, *self._node_flags()])

    def _node_flags(self) -> list[str]:
        return [
            f"--node-ip-address={LOOPBACK}",
            f"--num-cpus={self.cpus_per_node}",
            "--num-gpus=0",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            f"--temp-dir={self.temp_dir}",
            *NodePorts().flags(),
        ]

    def _start_node(self, command: list[str]) -> None:
        log = (self.temp_dir / f"node-{len(self.processes)}.log").open("wb")
        environment = {**os.environ, **LOOPBACK_ENVIRONMENT}
        # A session of its own: what is left of the node after it stops can be killed by its group id.
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True
        )
        self.processes.append(process)

    def _wait_for_head(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            self._check_running()
            with socket.socket() as sock:
                if sock.connect_ex((LOOPBACK, self.port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"the Ray head did not listen on {self.address} within {START_SECONDS:.0f} s")

    def _check_running(self) -> None:
        for index, process in enumerate(self.processes):
            if process.poll() is not None:
                log = (self.temp_dir / f"node-{index}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Ray node {index} exited with {process.returncode}:\n{log}")

    def wait_for_nodes(self, ray: Any) -> list[str]:
        """The ids of every node, once all have joined (`ray`: the module, connected to this cluster)."""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            alive = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
            if len(alive) >= self.nodes:
                return alive
            self._check_running()
            time.sleep(0.2)
        raise TimeoutError(f"{self.nodes} Ray nodes did not join within {START_SECONDS:.0f} s")

    def stop(self) -> None:
        """Worker nodes first, then the head: SIGTERM, on which each node shuts down what it started; what
        is left of a node's session after STOP_SECONDS is killed by its group id."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            with suppress(subprocess.TimeoutExpired):
                process.wait(STOP_SECONDS)
            with suppress(ProcessLookupError):  # the group is gone: the node cleaned up after itself
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.processes.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextmanager
def loopback_cluster(nodes: int = 2, cpus_per_node: int = 1) -> Iterator[LoopbackCluster]:
    """A started `LoopbackCluster` with this process connected to it as a driver once every node has
    joined; on leaving, the driver disconnects and the nodes stop."""
    use_loopback_environment()
    import ray

    cluster = LoopbackCluster(nodes=nodes, cpus_per_node=cpus_per_node)
    try:
        cluster.start()
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes(ray)
        yield cluster
    finally:
        ray.shutdown()
        cluster.stop()


# A worker node ------------------------------------------------------------------------------------------


def worker_node_parameters(args: argparse.Namespace) -> Any:
    """What `ray start --address=… --block` would give its node, from the same flags."""
    from ray._private.parameter import RayParams

    return RayParams(
        node_ip_address=args.node_ip_address,
        node_name=args.node_ip_address,
        gcs_address=args.address,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        object_store_memory=args.object_store_memory,
        temp_dir=args.temp_dir,
        node_manager_port=args.node_manager_port,
        object_manager_port=args.object_manager_port,
        dashboard_agent_listen_port=args.dashboard_agent_listen_port,
        metrics_agent_port=args.dashboard_agent_grpc_port,
        runtime_env_agent_port=args.runtime_env_agent_port,
        metrics_export_port=args.metrics_export_port,
        min_worker_port=args.min_worker_port,
        max_worker_port=args.max_worker_port,
    )


def run_worker_node(args: argparse.Namespace) -> None:
    """Join the cluster at `args.address` and block, as `ray start --block` does: the node's processes stop
    with this one (SIGTERM), or this one exits when one of them dies."""
    use_loopback_environment()
    from ray._private.node import Node

    node = Node(worker_node_parameters(args), head=False, shutdown_at_exit=True, spawn_reaper=True)
    print(f"worker node {node.node_id} joined {args.address}", flush=True)
    while not node.dead_processes():
        time.sleep(1.0)
    node.kill_all_processes(check_alive=False, allow_graceful=False)
    sys.exit(1)


def run_loopback(args: argparse.Namespace) -> None:
    """A loopback cluster for a session by hand (docs/ray.md): its address on stdout; Ctrl-C stops it."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # SIGTERM, too, stops the nodes on the way out
    with loopback_cluster(nodes=args.nodes, cpus_per_node=args.cpus_per_node) as cluster:
        print(f"Ray cluster of {args.nodes} nodes at {cluster.address}; Ctrl-C stops it", flush=True)
        with suppress(KeyboardInterrupt):
            signal.pause()


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m proxy_runs.ray_cluster")
    commands = main.add_subparsers(required=True)
    loopback = commands.add_parser("loopback", help="start a Ray cluster on 127.0.0.1 until Ctrl-C")
    loopback.add_argument("--nodes", type=int, default=2)
    loopback.add_argument("--cpus-per-node", type=int, default=1)
    loopback.set_defaults(run=run_loopback)
    node = commands.add_parser("worker-node", help="join a loopback cluster as `ray start --block` would")
    node.add_argument("--address", required=True)
    node.add_argument("--node-ip-address", default=LOOPBACK)
    node.add_argument("--num-cpus", type=int, required=True)
    node.add_argument("--num-gpus", type=int, default=0)
    node.add_argument("--object-store-memory", type=int, default=OBJECT_STORE_BYTES)
    node.add_argument("--temp-dir", required=True)
    for name in (
        "node-manager-port",
        "object-manager-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
        "metrics-export-port",
        "min-worker-port",
        "max-worker-port",
    ):
        node.add_argument(f"--{name}", type=int, default=0)
    node.set_defaults(run=run_worker_node)
    return main


if __name__ == "__main__":
    arguments = parser().parse_args()
    arguments.run(arguments)
