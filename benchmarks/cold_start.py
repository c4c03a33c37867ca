"""Cold start of the serving image: seconds from `docker run` until /readyz answers 200, per process.

Run (after building the image, e.g. by `docker compose -f deploy/docker-compose.yml build`)::

    python -m benchmarks.cold_start --image sae-router:latest --runs 2

Each run starts a fresh container (nothing cached in it: the compact backbone is rebuilt in /tmp, the router
loaded and warmed; the image sets HF_HUB_OFFLINE, nothing is fetched) with its port published on loopback, and
polls http://127.0.0.1:PORT/readyz every 0.25 s. Prints the image size and a markdown table.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import time

import httpx

PROCESSES = {
    # the feature worker: loads the router, its backbone and SAE, warms up
    "worker": (8081, ["worker", "--config", "/app/deploy/config.example-upstream.yaml", "--host", "0.0.0.0"]),
    # a gateway without a worker: the same router in-process (the image's default command)
    "gateway (in-process router)": (
        8080,
        ["serve", "--config", "/app/deploy/config.default.yaml", "--host", "0.0.0.0"],
    ),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cold_start(image: str, port: int, args: list[str], timeout_s: float = 600) -> float:
    """Seconds from `docker run` to the first 200 from /readyz."""
    host_port = _free_port()
    start = time.perf_counter()
    cid = subprocess.run(
        ["docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{host_port}:{port}", image, *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        while time.perf_counter() - start < timeout_s:
            try:
                if httpx.get(f"http://127.0.0.1:{host_port}/readyz", timeout=2).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"{args[0]} not ready after {timeout_s} s")
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="sae-router:latest")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    size = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Size}}", args.image], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"image {args.image}: {int(size) / 1e9:.2f} GB\n")
    print("| process | runs | cold start to ready (s), each | median |")
    print("|---|---|---|---|")
    for name, (port, cmd) in PROCESSES.items():
        times = [cold_start(args.image, port, cmd) for _ in range(args.runs)]
        each = ", ".join(f"{t:.1f}" for t in times)
        print(f"| {name} | {len(times)} | {each} | {statistics.median(times):.1f} |")


if __name__ == "__main__":
    main()
