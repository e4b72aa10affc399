"""`midillm-lite serve` end to end: the real CLI and uvicorn on a free loopback port, the tiny model, real signals.

The server harness and HTTP client are scripts/load_serve.py's (the load test), so both drive the server alike.
Long generations use free sampling (no time ceiling) and many tokens, so a cancel or a signal always lands while
the generation runs: the tests wait for a progress event with tokens before they act.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mido
import pytest

from midillm_lite.limits import MAX_BODY_BYTES

_spec = importlib.util.spec_from_file_location("load_serve", Path(__file__).parents[1] / "scripts" / "load_serve.py")
assert _spec is not None and _spec.loader is not None
load_serve = importlib.util.module_from_spec(_spec)
sys.modules["load_serve"] = load_serve  # dataclasses look their module up there
_spec.loader.exec_module(load_serve)
ServerProcess, call, call_json, events = (
    load_serve.ServerProcess,
    load_serve.call,
    load_serve.call_json,
    load_serve.events,
)

pytestmark = pytest.mark.slow

QUICK = {"prompt": "A gentle piece for solo piano.", "n": 2, "max_tokens": 30, "seed": 1}
LONG = {"prompt": "A long organ fugue.", "n": 1, "max_tokens": 4096, "strict": False, "seed": 2}
TOKEN = "test-token-0123456789"
WAIT_S = 120


def wait_final(server, job_id: str) -> dict:
    return load_serve._wait_final(server, job_id, time.monotonic() + WAIT_S)


def wait_running(server, job_id: str, headers: dict | None = None) -> None:
    stream, conn = events(server, job_id, headers)
    for name, data in stream:
        assert name == "progress", data
        if data["status"] == "running" and data["progress"]["outputs"][0]["tokens"] > 0:
            conn.close()
            return


@pytest.fixture(scope="module")
def server(tiny_gguf, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve-out")
    # 2 slots: a long n=1 generation leaves too few for an n=2 one, which waits in the batch scheduler.
    with ServerProcess(tiny_gguf(), out, "--threads", "2", "--queue", "2", "--slots", "2") as proc:
        yield proc
        assert proc.stop(signal.SIGTERM) == 0, "".join(proc.lines)


def test_generate_stream_and_download(server) -> None:
    assert call_json(server, "GET", "/v1/health") == (200, {"status": "ok"})
    status, job = call_json(server, "POST", "/v1/generations", QUICK)
    assert status == 202, job
    stream, _ = events(server, job["id"])
    seen = list(stream)
    names = [name for name, _ in seen]
    assert names[-1] == "end" and "progress" in names[:-1]
    final = seen[-1][1]
    assert final["status"] == "done" and len(final["outputs"]) == 2 and final["seed"] == 1
    kinds = {(f["name"], f["kind"]) for f in final["files"]}
    for i in (1, 2):
        assert {(f"gen_{i}_tokens.txt", "tokens"), (f"gen_{i}.png", "image")} <= kinds
    midi = [f for f in final["files"] if f["kind"] == "midi"]
    assert len(midi) == 2
    code, headers, raw = call(server, "GET", midi[0]["url"] + "?download=1")
    assert code == 200 and headers["content-type"] == "audio/midi" and "attachment" in headers["content-disposition"]
    assert mido.MidiFile(file=io.BytesIO(raw)).tracks
    code, headers, raw = call(server, "GET", f"/v1/generations/{job['id']}/files/gen_1.png")
    assert code == 200 and raw.startswith(b"\x89PNG") and headers["x-content-type-options"] == "nosniff"
    stats = json.loads(call(server, "GET", f"/v1/generations/{job['id']}/files/generation_stats.json")[2])
    assert stats["sampling"]["seed"] == 1 and stats["prompt"] == QUICK["prompt"]
    listed = call_json(server, "GET", "/v1/generations")[1]["generations"]
    assert job["id"] in [g["id"] for g in listed]
    assert "access-control-allow-origin" not in headers


def test_continue_an_uploaded_midi(server, tmp_path: Path) -> None:
    piece = mido.MidiFile()
    track = mido.MidiTrack()
    for i in range(8):
        track += [mido.Message("note_on", note=60 + i, velocity=80, time=0 if i == 0 else 240),
                  mido.Message("note_off", note=60 + i, velocity=0, time=240)]  # fmt: skip
    piece.tracks.append(track)
    buf = io.BytesIO()
    piece.save(file=buf)
    body, kind = _multipart({"prompt": "Go on.", "max_tokens": "30", "from_seconds": "2"}, buf.getvalue())
    status, _, raw = call(server, "POST", "/v1/generations", body, {"Content-Type": kind})
    job = json.loads(raw)
    assert status == 202, job
    final = wait_final(server, job["id"])
    assert final["status"] == "done" and final["request"]["continue_midi"]
    assert ("input.mid", "input") in {(f["name"], f["kind"]) for f in final["files"]}
    out = [f for f in final["files"] if f["kind"] == "midi"]
    notes = [m for t in load_serve.read_midi(server, out[0]["url"]).tracks for m in t if m.type == "note_on"]
    assert len(notes) >= 4  # the cut piece (notes before 2 s) is in the output


def test_infill_an_uploaded_midi(server) -> None:
    piece = (Path(__file__).parent / "data" / "strawberry.mid").read_bytes()
    fields = {"prompt": "A pop song.", "max_tokens": "60", "mode": "infill", "from_seconds": "150", "to_seconds": "160"}
    body, kind = _multipart(fields, piece)
    status, _, raw = call(server, "POST", "/v1/generations", body, {"Content-Type": kind})
    assert status == 202, raw
    final = wait_final(server, json.loads(raw)["id"])
    assert final["status"] == "done", final
    assert final["request"]["mode"] == "infill" and final["outputs"][0]["new_notes"] is not None
    out = [f for f in final["files"] if f["kind"] == "midi"]
    notes = [m for t in load_serve.read_midi(server, out[0]["url"]).tracks for m in t if m.type == "note_on"]
    assert len(notes) >= 2700  # the kept piece is in the output


def _multipart(fields: dict[str, str], midi: bytes) -> tuple[bytes, str]:
    boundary = "midillmtestboundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in
             fields.items()]  # fmt: skip
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="midi"; filename="../../etc/x.mid"\r\n'
                 "Content-Type: audio/midi\r\n\r\n".encode() + midi + b"\r\n")  # fmt: skip
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    ("body", "kind", "code", "says"),
    [
        (b'{"prompt": "x", "n": 99}', "application/json", 400, "n must be"),
        (b'{"prompt": "x", "max_tokens": 100000}', "application/json", 400, "max_tokens must be"),
        (json.dumps({"prompt": "x" * 5000}).encode(), "application/json", 400, "characters"),
        (b'{"prompt": ', "application/json", 400, "not valid JSON"),
        (b"[1]", "application/json", 400, "JSON object"),
        (b"prompt=x", "text/plain", 415, "multipart"),
        (b"x" * (MAX_BODY_BYTES + 1), "application/json", 413, "at most"),
    ],
)
def test_bad_requests_get_a_clear_4xx(server, body: bytes, kind: str, code: int, says: str) -> None:
    status, _, raw = call(server, "POST", "/v1/generations", body, {"Content-Type": kind})
    assert status == code and says in json.loads(raw)["error"]


def test_a_file_that_is_not_midi_is_refused_and_leaves_nothing(server) -> None:
    before = {g["id"] for g in call_json(server, "GET", "/v1/generations?limit=200")[1]["generations"]}
    body, kind = _multipart({"prompt": "Go on."}, b"MThd not really")
    status, _, raw = call(server, "POST", "/v1/generations", body, {"Content-Type": kind})
    assert status == 400 and "not a readable MIDI file" in json.loads(raw)["error"]
    after = {g["id"] for g in call_json(server, "GET", "/v1/generations?limit=200")[1]["generations"]}
    assert after == before


def test_names_come_from_the_server_only(server) -> None:
    job = call_json(server, "POST", "/v1/generations", QUICK)[1]
    final = wait_final(server, job["id"])
    for name in ("../job.json", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", ".job.json.part"):
        assert call(server, "GET", f"/v1/generations/{final['id']}/files/{name}")[0] == 404
    assert call(server, "GET", "/v1/generations/..%2F..%2Fetc/files")[0] == 404
    assert call(server, "GET", "/v1/generations/nope")[0] == 404


def test_another_site_and_another_host_are_refused(server) -> None:
    status, body = call_json(server, "POST", "/v1/generations", QUICK, {"Origin": "http://evil.example"})
    assert status == 403 and "another site" in body["error"]
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example", "[::2]:80", "[bad"):
        assert call(server, "GET", "/v1/health", headers={"Host": host})[0] == 400, host  # DNS rebinding
    for host in ("localhost", f"127.0.0.1:{server.port}", "[::1]:1234", "LOCALHOST"):
        assert call(server, "GET", "/v1/health", headers={"Host": host})[0] == 200, host


def test_cancel_keeps_the_partial_output_and_a_full_queue_is_429(server) -> None:
    status, running = call_json(server, "POST", "/v1/generations", LONG)
    assert status == 202
    wait_running(server, running["id"])
    # The first waits in the batch scheduler for slots (its worker taken), the next two fill --queue 2.
    waiting = [call_json(server, "POST", "/v1/generations", QUICK)[1] for _ in range(3)]
    status, body = call_json(server, "POST", "/v1/generations", QUICK)
    assert status == 429 and "waiting" in body["error"]
    assert call_json(server, "POST", f"/v1/generations/{waiting[0]['id']}/cancel")[0] == 202
    assert call_json(server, "POST", f"/v1/generations/{running['id']}/cancel")[0] == 202
    final = wait_final(server, running["id"])
    assert final["status"] == "cancelled" and final["partial"], final
    (midi,) = [f for f in final["files"] if f["kind"] == "midi"]
    load_serve.read_midi(server, midi["url"])
    never = wait_final(server, waiting[0]["id"])
    assert never["status"] == "cancelled" and never["outputs"] == []
    assert wait_final(server, waiting[1]["id"])["status"] == "done"


def test_a_short_load_loses_nothing(server) -> None:
    """`make load` in small: clients at once (past --queue 2, so some are told 429 and come back), one leaving
    mid-stream, one cancelling; every request ends done or cancelled with MIDI files mido reads, all listed."""
    report = load_serve.run_load(server, requests=8, concurrency=4, settings={"n": 1, "max_tokens": 30},
                                 disconnect_every=4, cancel_every=4, timeout_s=300)  # fmt: skip
    assert all(report["checks"].values()), report
    assert report["behaviours"] == {"normal": 4, "disconnect": 2, "cancel": 2}
    assert report["midi_files_read"] >= report["statuses"].get("done", 0)


@pytest.mark.parametrize(
    ("signals", "code"),
    [([signal.SIGTERM], 0), ([signal.SIGINT], 130), ([signal.SIGINT, signal.SIGTERM, signal.SIGINT], 130)],
    ids=["term", "int", "int-term-int"],
)
def test_a_signal_keeps_running_work_and_a_restart_lists_it(tiny_gguf, tmp_path: Path, signals, code) -> None:
    # 2 slots: the n=2 request waits in the batch scheduler behind the long n=1 one, so it never starts.
    with ServerProcess(tiny_gguf(), tmp_path, "--threads", "2", "--slots", "2") as server:
        job = call_json(server, "POST", "/v1/generations", LONG)[1]
        queued = call_json(server, "POST", "/v1/generations", QUICK)[1]
        wait_running(server, job["id"])
        stream, _ = events(server, job["id"])  # a client still watching when the signal comes
        # The first signal decides the exit status; later ones change nothing, and the work is written all the same.
        # They go once the first has stopped the job: sent back to back, two signals may reach the server's threads
        # in either order (and so did stop()'s SIGTERM right after a SIGINT: an exit 0 for 130 once).
        server.proc.send_signal(signals[0])
        seen = list(stream)
        for sig in signals[1:]:
            server.proc.send_signal(sig)
        assert server.stop(sig=None) == code, "".join(server.lines)
        assert not any("Traceback" in line for line in server.lines), "".join(server.lines)
        assert seen[-1][0] == "end"
    record = json.loads((tmp_path / job["id"] / "job.json").read_text())
    assert record["status"] == "interrupted"
    stats = json.loads((tmp_path / job["id"] / "generation_stats.json").read_text())
    assert stats["interrupted"] and stats["outputs"][0]["partial"]
    mido.MidiFile(stats["outputs"][0]["file"])  # under rejected/ when the random model stacked notes
    with ServerProcess(tiny_gguf(), tmp_path, "--threads", "2") as again:
        listed = {g["id"]: g for g in call_json(again, "GET", "/v1/generations")[1]["generations"]}
        assert listed[job["id"]]["status"] == "interrupted" and listed[job["id"]]["partial"]
        assert listed[queued["id"]]["status"] == "interrupted" and not listed[queued["id"]]["outputs"]
        assert again.stop() == 0


def test_a_token_guards_every_route_but_health(tiny_gguf, tmp_path: Path) -> None:
    with ServerProcess(tiny_gguf(), tmp_path, env={"MIDILLM_TOKEN": TOKEN}) as server:
        assert server.wait_line("bearer token is required")
        assert call(server, "GET", "/v1/health")[0] == 200
        for path in ("/v1/generations", "/v1/model", "/v1/openapi.json"):
            status, headers, _ = call(server, "GET", path)
            assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert call(server, "GET", "/v1/model", headers={"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
        assert call(server, "GET", "/v1/model", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert call(server, "GET", f"/v1/model?access_token={TOKEN}")[0] == 200
        assert call(server, "GET", "/")[0] == 200  # the page holds no data; it asks for the token
        assert server.stop() == 0


def test_a_network_address_without_a_token_is_refused_before_loading(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "midillm_lite", "serve", "--host", "0.0.0.0", "--model", "nothing",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "MIDILLM_TOKEN"})  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: listening on 0.0.0.0 lets other machines in: give a token (--token or MIDILLM_TOKEN), or --no-auth "
        "to let anyone in"
    ]
