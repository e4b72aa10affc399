"""Load test of `midillm-lite serve` on loopback (`make load`): many clients at once, some leaving, some cancelling.

Starts the real CLI (`serve --port 0`) on a model, then runs `--requests` generations from `--concurrency` client
threads. Every few clients close their progress stream mid-way (a closed laptop lid) and every few cancel once the
generation runs. Then it checks that nothing was lost: every accepted request ended done or cancelled, each output
it lists is a MIDI file mido reads, the server lists every one, and the server's RSS stayed flat (after the first
round of requests, which warms its allocators). Ends the server with SIGTERM and checks it exits 0.

Prints one JSON report (requests, p50/p95 latency, tokens/s, errors, RSS) and exits 1 if a check failed.

    .venv/bin/python scripts/load_serve.py                 # the bundled demo model, 60 requests, 8 at once
    .venv/bin/python scripts/load_serve.py --tiny --requests 16 --concurrency 4
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import mido

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "models" / "midillm-demo-q8_0.gguf"
PROMPTS = ["A gentle piece for solo piano.", "A lively march for brass band.", "A slow chorale for strings.",
           "A jazz trio with walking bass."]  # fmt: skip
READY = re.compile(r"serving on (http://\S+)")
START_TIMEOUT_S = 120
RSS_GROWTH_MIB = 48  # allocator noise across a run is a few MiB; a leaked context or result per request is more
FINAL = {"done", "cancelled", "interrupted", "failed"}


# --- the server process -------------------------------------------------------------------------------------------
class ServerProcess:
    """`midillm-lite serve` in a child process on a free loopback port; `url` once it listens."""

    def __init__(self, model: Path, out: Path, *extra: str, env: dict[str, str] | None = None):
        args = [sys.executable, "-m", "midillm_lite", "serve", "--model", str(model), "--port", "0", "--out", str(out),
                *extra]  # fmt: skip
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                     env={**os.environ, **(env or {})})  # fmt: skip
        self.lines: list[str] = []
        self.url = self._wait_ready()
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            match = READY.search(line)
            if match:
                return match[1]
        self.proc.kill()
        raise RuntimeError("the server did not start:\n" + "".join(self.lines))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_line(self, text: str, timeout: float = 10) -> bool:
        """Whether the server printed a line holding `text` (within `timeout`: stderr is read by a thread)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return True
            time.sleep(0.05)
        return False

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise KeyError("VmRSS")

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 120) -> int:
        """Send `sig` (None: none, the server is already stopping) and wait for the exit status."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --- a small HTTP client (the standard library's, so the test needs nothing more) ---------------------------------
def call(server: ServerProcess, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def call_json(server: ServerProcess, method: str, path: str, data: dict | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, dict]:  # fmt: skip
    body = None if data is None else json.dumps(data).encode()
    sent = {"Content-Type": "application/json", **(headers or {})} if body is not None else dict(headers or {})
    status, _, raw = call(server, method, path, body, sent)
    return status, json.loads(raw) if raw else {}


def events(server: ServerProcess, job_id: str, headers: dict[str, str] | None = None, timeout: float = 300):
    """(event name, data) from a generation's progress stream, and the connection (to close it early)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    conn.request("GET", f"/v1/generations/{job_id}/events", headers=headers or {})
    response = conn.getresponse()
    if response.status != 200:
        conn.close()
        raise RuntimeError(f"events: {response.status} {response.read()[:200]!r}")

    def stream():
        name = None
        try:
            for raw in response:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: ") and name:
                    yield name, json.loads(line[len("data: ") :])
                    name = None
        finally:
            conn.close()

    return stream(), conn


def read_midi(server: ServerProcess, url: str, headers: dict[str, str] | None = None) -> mido.MidiFile:
    status, _, raw = call(server, "GET", url, headers=headers)
    if status != 200:
        raise RuntimeError(f"{url}: {status}")
    return mido.MidiFile(file=io.BytesIO(raw))


# --- one client ---------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    index: int
    behaviour: str  # normal, disconnect, cancel
    id: str | None = None
    status: str | None = None
    latency_s: float | None = None
    tokens: int = 0
    midi_files: int = 0
    refused: int = 0  # 429 answers before it got in
    errors: list[str] = field(default_factory=list)


def client(server: ServerProcess, index: int, behaviour: str, settings: dict, deadline: float) -> Outcome:
    outcome = Outcome(index, behaviour)
    started = time.monotonic()
    body = {"prompt": PROMPTS[index % len(PROMPTS)], "seed": index, **settings}
    while True:
        status, job = call_json(server, "POST", "/v1/generations", body)
        if status != 429:
            break
        outcome.refused += 1
        if time.monotonic() > deadline:
            outcome.errors.append("still refused (429) at the deadline")
            return outcome
        time.sleep(0.5)
    if status != 202:
        outcome.errors.append(f"create: {status} {job}")
        return outcome
    outcome.id = job["id"]
    try:
        _follow(server, outcome, behaviour)
        final = _wait_final(server, outcome.id, deadline)
    except Exception as exc:  # any failure is this client's finding, reported, not a crash of the run
        outcome.errors.append(f"{type(exc).__name__}: {exc}")
        return outcome
    outcome.latency_s = time.monotonic() - started
    outcome.status = final["status"]
    _check_outputs(server, outcome, final)
    return outcome


def _follow(server: ServerProcess, outcome: Outcome, behaviour: str) -> None:
    assert outcome.id is not None
    stream, conn = events(server, outcome.id)
    for name, data in stream:
        if name == "end":
            return
        running = data.get("status") == "running" and any(p["tokens"] for p in data["progress"]["outputs"])
        if behaviour == "disconnect" and running:
            conn.sock.close() if conn.sock else None  # gone without a word, mid-stream
            conn.close()
            return
        if behaviour == "cancel" and running:
            status, _ = call_json(server, "POST", f"/v1/generations/{outcome.id}/cancel")
            if status != 202:
                outcome.errors.append(f"cancel: {status}")
            behaviour = "normal"  # then read on to the end event


def _wait_final(server: ServerProcess, job_id: str, deadline: float) -> dict:
    while time.monotonic() < deadline:
        status, job = call_json(server, "GET", f"/v1/generations/{job_id}")
        if status == 200 and job["status"] in FINAL:
            return job
        time.sleep(0.2)
    raise TimeoutError(f"{job_id} did not finish by the deadline")


def _check_outputs(server: ServerProcess, outcome: Outcome, job: dict) -> None:
    if job["status"] not in ("done", "cancelled"):
        outcome.errors.append(f"ended {job['status']}: {job.get('error')}")
    midis = [f for f in job.get("files", []) if f["kind"] == "midi"]
    if len(midis) != len(job["outputs"]):
        outcome.errors.append(f"{len(job['outputs'])} outputs but {len(midis)} MIDI files")
    if job["status"] == "done" and not midis:
        outcome.errors.append("done without a MIDI file")
    for f in midis:
        read_midi(server, f["url"])  # raises on a file mido cannot read
        outcome.midi_files += 1
    outcome.tokens = sum(o.get("tokens_generated", 0) for o in job["outputs"])


# --- the run ------------------------------------------------------------------------------------------------------
def behaviour_of(index: int, *, disconnect_every: int, cancel_every: int) -> str:
    if cancel_every and index % cancel_every == cancel_every - 1:
        return "cancel"
    if disconnect_every and index % disconnect_every == disconnect_every // 2:
        return "disconnect"
    return "normal"


def run_load(server: ServerProcess, *, requests: int, concurrency: int, settings: dict, disconnect_every: int,
             cancel_every: int, timeout_s: float) -> dict:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    rss: list[float] = [server.rss_mib()]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.5):
            rss.append(server.rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        futures = [
            pool.submit(client, server, i, behaviour_of(i, disconnect_every=disconnect_every,
                                                        cancel_every=cancel_every), settings, deadline)
            for i in range(requests)
        ]  # fmt: skip
        outcomes = [f.result() for f in futures]
    wall = time.monotonic() - started
    sampling.set()
    sampler.join()
    rss.append(server.rss_mib())
    return _report(server, outcomes, wall, rss, warm=max(1, len(rss) * concurrency // max(requests, 1)))


def _report(server: ServerProcess, outcomes: list[Outcome], wall: float, rss: list[float], warm: int) -> dict:
    status, listing = call_json(server, "GET", "/v1/generations?limit=200")
    listed = {g["id"] for g in listing.get("generations", [])} if status == 200 else set()
    accepted = [o for o in outcomes if o.id is not None]
    lost = [o.id for o in accepted if o.id not in listed]
    latencies = sorted(o.latency_s for o in accepted if o.status == "done" and o.latency_s is not None)
    errors = [f"request {o.index} ({o.behaviour}): {e}" for o in outcomes for e in o.errors]
    after_warmup = max(rss[: warm + 1])
    growth = rss[-1] - after_warmup
    checks = {
        "every request accepted": len(accepted) == len(outcomes),
        "every accepted request ended done or cancelled": all(o.status in ("done", "cancelled") for o in accepted),
        "no client errors": not errors,
        "none lost from the listing": not lost,
        f"rss growth under {RSS_GROWTH_MIB} MiB": growth < RSS_GROWTH_MIB,
    }
    by = {b: sum(1 for o in outcomes if o.behaviour == b) for b in ("normal", "disconnect", "cancel")}
    return {
        "requests": len(outcomes),
        "behaviours": by,
        "statuses": {s: sum(1 for o in accepted if o.status == s) for s in sorted({str(o.status) for o in accepted})},
        "refused_429": sum(o.refused for o in outcomes),
        "midi_files_read": sum(o.midi_files for o in outcomes),
        "latency_s": {
            "p50": round(statistics.median(latencies), 2) if latencies else None,
            "p95": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 2) if latencies else None,
            "of": "done requests, create to final status",
        },
        "tokens": sum(o.tokens for o in outcomes),
        "tokens_per_s": round(sum(o.tokens for o in outcomes) / wall, 1),
        "wall_s": round(wall, 1),
        "rss_mib": {
            "start": round(rss[0], 1),
            "after_warmup": round(after_warmup, 1),
            "end": round(rss[-1], 1),
            "peak": round(max(rss), 1),
        },
        "errors": errors[:20],
        "lost": lost,
        "checks": checks,
    }


def tiny_model(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT))  # devkit/
    from midillm_lite.convert import convert

    from devkit.checkpoints import make_checkpoint

    out = folder / "tiny-f32.gguf"
    convert(make_checkpoint(folder / "checkpoint"), out, quant="f32", threads=2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEMO_MODEL)
    ap.add_argument("--tiny", action="store_true", help="build and serve the suite's tiny random model instead")
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--disconnect-every", type=int, default=10, help="one client in this many leaves mid-stream")
    ap.add_argument("--cancel-every", type=int, default=10, help="one client in this many cancels while it runs")
    ap.add_argument("--max-tokens", type=int, default=150)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900, help="seconds for the whole run")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="midillm-load-") as tmp:
        model = tiny_model(Path(tmp)) if args.tiny else args.model
        with ServerProcess(model, Path(tmp) / "out", "--threads", str(args.threads)) as server:
            report = run_load(server, requests=args.requests, concurrency=args.concurrency,
                              settings={"n": args.n, "max_tokens": args.max_tokens},
                              disconnect_every=args.disconnect_every, cancel_every=args.cancel_every,
                              timeout_s=args.timeout)  # fmt: skip
            code = server.stop(signal.SIGTERM)
            report["checks"]["exit 0 after SIGTERM"] = code == 0
            report["model"] = model.name
            report["settings"] = {"n": args.n, "max_tokens": args.max_tokens, "concurrency": args.concurrency,
                                  "threads": args.threads}  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
