"""Load test of `boltzformer serve`: concurrent `gradio_client` sessions against a real server.

    python -m boltzformer.apps.web_load [--checkpoint DIR] [--sessions 12] [--waves 10] [--burst]
    make load-test   (both modes)

Starts `boltzformer serve` in its own process, with a login (a temporary --auth-file, as on a
network) and, without --checkpoint, an untrained model of the `tiny` preset (the architecture
`make demo` trains). Then `waves` times: `sessions` concurrent sessions, each one client that
logs in, loads a phantom and segments two prompts (the good requests), then sends three bad
ones: a blank prompt, a corrupt PNG and a text file named .dcm. A login with a wrong password,
a request without one, an upload cut off mid-body and a download dropped after its first
bytes come along with every wave. With `burst`, each wave is a burst of `sessions` new
clients with gradio_client's default time-outs (5 s), started together right after the last
wave ended, that only load and segment (the pattern of issue 26); a request refused as busy
(the queue full, or the time limit) counts as refused, not failed.

Reported: requests answered (and refused as busy), the seconds a new client took to start
its session (its first requests), latency (p50/p95 of the good ones, queueing included),
errors, the server's resident memory (/proc, Linux): at start, after each wave, its peak
during each wave (sampled every 0.1 s), and the leak per session (the median slope of memory
over the sessions served, from the first wave's end on: a step of the allocator moves it
little, a leak moves every pair); whether the server's log holds a traceback.

Checks (exit status 1 if one fails): the server's answer to a new client's first request
within FIRST_ANSWER_S (1 s) all along; every good request answered (in a burst: answered or
refused as busy); every bad one answered with its one-line message; no answer without the
login; sessions isolated (each phantom's figures and masks identical in every session, and
different between phantoms); no traceback in the server's log; the leak per session at most
`leak_mb` MB; memory at all times under its start plus the server's --cache-mb.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx
import numpy as np
from gradio_client import Client, handle_file
from PIL import Image

from boltzformer.apps.web import make_examples
from boltzformer.apps.web_sessions import CACHE_MB
from boltzformer.modeling.boltzformer import build_model

LOGIN = ("loadtest", "not-a-secret")
#: Seconds a client waits for the server (httpx's default of 5 s is too short on a busy CPU).
TIMEOUT = 600.0
#: The most memory a session may leave behind, in MB (the median slope over the waves).
LEAK_MB = 2.0
#: The longest the server may take to answer a new client's first request, in seconds.
FIRST_ANSWER_S = 1.0
#: How a request refused as busy reads: the queue full (gradio_client's words), the time limit.
BUSY = ("Queue is full! Please try again.", "busy: ")
#: The bad requests and the start of the one-line message each must get.
BAD = {"blank prompt": "no prompt", "corrupt PNG": "corrupt.png: not a readable image",
       "text named .dcm": "notes.dcm: "}


@dataclass
class Report:
    """What a load test saw (`run` fills it in)."""

    sessions: int
    waves: int
    cache_mb: int = CACHE_MB
    burst: bool = False
    good: int = 0
    answered: int = 0
    latencies: list[float] = field(default_factory=list)
    bad: int = 0
    bad_answered: int = 0
    busy: int = 0  # good requests refused as busy (burst mode)
    connect: list[float] = field(default_factory=list)  # seconds to start a session
    first: list[float] = field(default_factory=list)  # seconds to answer a client's first GET
    errors: list[str] = field(default_factory=list)
    refused: int = 0  # requests without (or with a wrong) login that got nothing
    dropped: int = 0  # connections the test cut off mid-request
    results: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    start_mb: float = 0.0
    after_mb: list[float] = field(default_factory=list)  # resident memory after each wave
    peak_mb: list[float] = field(default_factory=list)  # its peak during each wave
    tracebacks: int = 0
    first_traceback: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def isolated(self) -> bool:
        """Each phantom got one result in all sessions, and the phantoms' results differ."""
        fingerprints = [next(iter(r)) for r in self.results.values() if len(r) == 1]
        return len(fingerprints) == len(self.results) == len(set(fingerprints)) > 1

    @property
    def leak_mb(self) -> float:
        """MB of memory per session served: the median of the slopes between every two waves'
        memory after them, the first wave left out (Theil-Sen; 0 with fewer than 3 waves)."""
        points = list(enumerate(self.after_mb))[1:]
        slopes = [(b - a) / ((j - i) * self.sessions)
                  for (i, a), (j, b) in itertools.combinations(points, 2)]
        return float(np.median(slopes)) if slopes else 0.0

    @property
    def bound_mb(self) -> float:
        """The most resident memory allowed at any time: at start plus the --cache-mb."""
        return self.start_mb + self.cache_mb

    def memory_ok(self, leak_mb: float) -> bool:
        return self.leak_mb <= leak_mb and max(self.peak_mb) <= self.bound_mb

    def passed(self, leak_mb: float) -> bool:
        answered = self.answered + self.busy if self.burst else self.answered
        extras = self.burst or (self.refused == 2 * self.waves and self.bad_answered == self.bad)
        return (answered == self.good and extras and not self.errors and self.isolated
                and self.tracebacks == 0 and self.memory_ok(leak_mb) and self.first_ok)

    @property
    def first_ok(self) -> bool:
        """The server answered every new client's first request within FIRST_ANSWER_S."""
        return bool(self.first) and max(self.first) <= FIRST_ANSWER_S

    def percentile(self, q: float, values: list[float] | None = None) -> float:
        values = self.latencies if values is None else values
        return float(np.percentile(values, q)) if values else float("nan")

    def summary(self, leak_mb: float) -> str:
        n, total = self.sessions, self.sessions * self.waves
        kind = "bursts of new sessions (default time-outs)" if self.burst else "waves"
        lines = [
            f"{n} concurrent sessions x {self.waves} {kind} = {total} sessions",
            f"good requests: {self.answered} of {self.good} answered, {self.busy} refused as "
            f"busy; latency p50 {self.percentile(50):.2f} s, p95 {self.percentile(95):.2f} s "
            "(queueing included)",
            f"the server's answer to a new client's first request (the page config, every "
            f"0.5 s during the waves): p50 {self.percentile(50, self.first):.3f} s, max "
            f"{max(self.first, default=float('nan')):.3f} s (bound {FIRST_ANSWER_S:g} s: "
            f"{'ok' if self.first_ok else 'OVER'}); a gradio_client session started "
            f"(login, config, API info): p50 {self.percentile(50, self.connect):.2f} s, max "
            f"{max(self.connect, default=float('nan')):.2f} s",
        ]
        if not self.burst:
            lines += [
                f"bad requests: {self.bad_answered} of {self.bad} answered with their one-line "
                "message",
                f"without a login: {self.refused} of {2 * self.waves} requests got nothing"]
        peak, after = max(self.peak_mb), self.after_mb
        lines += [
            f"errors: {len(self.errors)}" + "".join(f"\n  {e}" for e in self.errors[:10]),
            f"sessions isolated: {'yes' if self.isolated else 'NO'} ({len(self.results)} "
            "phantoms, " + ", ".join(str(len(r)) for r in self.results.values())
            + " distinct result(s) each)",
            f"server log: {self.tracebacks} traceback(s), after {self.dropped} connections "
            "cut off by the client",
            f"resident memory: start {self.start_mb:.0f} MB; after each wave "
            + " ".join(f"{m:.0f}" for m in after) + " MB; peak per wave "
            + " ".join(f"{m:.0f}" for m in self.peak_mb)
            + f" MB (highest {peak:.0f}, bound {self.bound_mb:.0f} = start + --cache-mb "
            f"{self.cache_mb}: {'ok' if peak <= self.bound_mb else 'OVER'})",
            f"leak: {self.leak_mb:+.2f} MB a session (bound {leak_mb:g}: "
            f"{'ok' if self.leak_mb <= leak_mb else 'OVER'})",
        ]
        if self.first_traceback:
            lines.append(f"the server log's first traceback:\n{self.first_traceback}")
        return "\n".join(lines)


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _digest(path: str | Path) -> str:
    """A fingerprint of an image file's pixels."""
    return hashlib.sha256(np.asarray(Image.open(path)).tobytes()).hexdigest()[:16]


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:300] or type(err).__name__


def _session(url: str, phantom: tuple[str, str], bad: dict[str, Path] | None,
             downloads: Path, report: Report) -> None:
    """One client: load a phantom, segment its two prompts; then the three `bad` requests
    (none in a burst, whose clients keep gradio_client's default time-outs)."""
    image, prompts = phantom
    start = time.perf_counter()
    try:
        client = Client(url, auth=LOGIN, verbose=False, download_files=str(downloads),
                        httpx_kwargs=None if report.burst else {"timeout": TIMEOUT})
    except Exception as err:  # a failed session start is a failed good request
        with report.lock:
            report.good += 2
            report.errors.append(f"connect: {_one_line(err)}")
        return
    with report.lock:
        report.connect.append(time.perf_counter() - start)
    good = [("load", (handle_file(image), "auto", 2), "/load"),
            ("segment", (prompts, 1, 0.5), "/segment")]
    for name, args, api in good:
        start = time.perf_counter()
        try:
            out = client.predict(*args, api_name=api)
        except Exception as err:
            busy = report.burst and str(err).startswith(BUSY) and "\n" not in str(err)
            with report.lock:  # refused as busy: a user would try again later
                report.good += 1
                report.busy += busy
                if not busy:
                    report.errors.append(f"{name} {Path(image).name}: {_one_line(err)}")
            return
        with report.lock:
            report.good += 1
            report.answered += 1
            report.latencies.append(time.perf_counter() - start)
    overlay, _, sampling, _, _, masks, _ = out
    fingerprint = "/".join(_digest(p) for p in (overlay, sampling, *masks))
    with report.lock:
        report.results[Path(image).name].add(fingerprint)
    if bad is None:
        return
    calls = {"blank prompt": (" \n ", 1, 0.5, "/segment"),
             "corrupt PNG": (handle_file(str(bad["corrupt PNG"])), "auto", 2, "/load"),
             "text named .dcm": (handle_file(str(bad["text named .dcm"])), "auto", 2, "/load")}
    for name, (*request, api) in calls.items():
        try:
            client.predict(*request, api_name=api)
            message = "answered as if it were good"
        except Exception as err:
            message = str(err)
        ok = message.startswith(BAD[name]) and "\n" not in message and "Traceback" not in message
        with report.lock:
            report.bad += 1
            report.bad_answered += ok
            if not ok:
                report.errors.append(f"{name}: {_one_line(Exception(message))}")


def _intruders(url: str, report: Report) -> None:
    """A login with a wrong password and a request without one: both must get nothing."""
    with httpx.Client(timeout=TIMEOUT) as anonymous:
        if anonymous.post(url + "login", data={"username": LOGIN[0],
                                               "password": "wrong"}).status_code >= 400:
            report.refused += 1
        if anonymous.get(url + "gradio_api/info").status_code == 401:
            report.refused += 1


def _cut_off(url: str, report: Report) -> None:
    """Requests whose client goes away (both with the login): an upload that stops mid-body,
    and a segment request whose result stream is dropped after its first bytes (a browser
    tab closed while it waits)."""
    split = urlsplit(url)
    assert split.port is not None  # `spawn`'s URLs name their port
    address = (split.hostname, split.port)
    with httpx.Client(timeout=TIMEOUT) as client:
        client.post(url + "login", data=dict(zip(("username", "password"), LOGIN)))
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        config = client.get(url + "config").json()
        segment = next(d["id"] for d in config["dependencies"] if d["api_name"] == "segment")
        session = f"cut-{time.monotonic_ns()}"
        client.post(url + "gradio_api/queue/join", json={
            "data": [None, "nodule", 1, 0.5, 0.0], "fn_index": segment, "session_hash": session})
    head = f"Host: {address[0]}:{address[1]}\r\nCookie: {cookie}\r\n"
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(f"GET /gradio_api/queue/data?session_hash={session} HTTP/1.1\r\n{head}"
                     "\r\n".encode())
        sock.recv(64)
    boundary = "loadtestboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
            "filename=\"cut.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + bytes(5000)
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(f"POST /gradio_api/upload HTTP/1.1\r\n{head}Content-Type: multipart/"
                     f"form-data; boundary={boundary}\r\nContent-Length: 1000000\r\n\r\n"
                     .encode() + body)
    with report.lock:
        report.dropped += 2


class _FirstAnswers:
    """While in a `with` block, a thread that asks the server for its page config every 0.5 s
    (what a new client asks first, with the login's cookie) and keeps the seconds each answer
    took in `report.first`."""

    def __init__(self, url: str, report: Report) -> None:
        self.url, self.report = url, report
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._ask, daemon=True)

    def _ask(self) -> None:
        with httpx.Client(timeout=TIMEOUT) as client:
            client.post(self.url + "login", data=dict(zip(("username", "password"), LOGIN)))
            while not self._stop.wait(0.5):
                start = time.perf_counter()
                try:
                    client.get(self.url + "config").raise_for_status()
                except httpx.HTTPError as err:
                    with self.report.lock:
                        self.report.errors.append(f"config: {_one_line(err)}")
                    return
                with self.report.lock:
                    self.report.first.append(time.perf_counter() - start)

    def __enter__(self) -> _FirstAnswers:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


class _PeakMemory:
    """The highest resident memory of process `pid` since the last `take()`, sampled every
    0.1 s by a thread of its own while in a `with` block."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (OSError, RuntimeError):  # the server has exited
                return

    def take(self) -> float:
        """The peak so far (and now), from here on a new one."""
        peak, self.peak = max(self.peak, rss_mb(self.pid)), 0.0
        return peak

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def run(checkpoint: Path, sessions: int, waves: int, work: Path, size: int = 256,
        burst: bool = False, cache_mb: int = CACHE_MB) -> Report:
    """Serve `checkpoint` (with `--cache-mb cache_mb`) and put it under load with `size` x
    `size` phantoms, in waves or in `burst`s (module docstring); the report."""
    logins = work / "logins.txt"
    logins.write_text(":".join(LOGIN) + "\n")
    phantoms = []  # (file, two prompts)
    for path, prompts in make_examples(work / "phantoms"):  # 256 x 256, three prompts each
        if size != 256:  # scaled up (drawing big phantoms takes minutes)
            scaled = work / f"{Path(path).stem}-{size}.png"
            Image.open(path).resize((size, size), Image.Resampling.NEAREST).save(scaled)
            path = str(scaled)
        phantoms.append((path, "\n".join(prompts.splitlines()[:2])))
    bad = {"corrupt PNG": work / "corrupt.png", "text named .dcm": work / "notes.dcm"}
    bad["corrupt PNG"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    bad["text named .dcm"].write_text("patient notes, not a DICOM file\n")
    log_path = work / "server.log"
    report = Report(sessions, waves, cache_mb, burst)
    with log_path.open("w") as log:
        proc, url = spawn(checkpoint, "--cached-sessions", str(sessions), "--cache-mb",
                          str(cache_mb), "--auth-file", str(logins), stdout=log)
        try:
            wait_until_up(url, proc, timeout=TIMEOUT)
            report.start_mb = rss_mb(proc.pid)
            with ThreadPoolExecutor(max_workers=sessions) as pool, \
                    _PeakMemory(proc.pid) as memory, _FirstAnswers(url, report):
                for wave in range(waves):
                    jobs = [pool.submit(_session, url, phantoms[i % len(phantoms)],
                                        None if burst else bad,
                                        work / "downloads" / f"{wave}-{i}", report)
                            for i in range(sessions)]
                    for extra in () if burst else (_intruders, _cut_off):
                        try:
                            extra(url, report)
                        except (httpx.HTTPError, OSError) as err:
                            with report.lock:
                                report.errors.append(f"{extra.__name__}: {_one_line(err)}")
                    for job in jobs:
                        job.result()
                    report.peak_mb.append(memory.take())
                    report.after_mb.append(rss_mb(proc.pid))
                    print(f"wave {wave + 1}/{waves}: {report.answered} of {report.good} good "
                          f"answered, {report.busy} busy, {len(report.errors)} errors, "
                          f"{report.after_mb[-1]:.0f} MB (peak {report.peak_mb[-1]:.0f})",
                          flush=True)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    log_text = log_path.read_text()
    report.tracebacks = log_text.count("Traceback")
    if report.tracebacks:
        start = log_text.index("Traceback")
        report.first_traceback = "\n".join(log_text[start:].splitlines()[:40])
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m boltzformer.apps.web_load",
        description="Load test of `boltzformer serve` (see this module's docstring).")
    parser.add_argument("--checkpoint", type=Path, metavar="DIR",
                        help="model to serve (default: an untrained `tiny` model, the "
                        "architecture `make demo` trains)")
    parser.add_argument("--sessions", type=int, default=12, metavar="N",
                        help="concurrent sessions per wave (default 12)")
    parser.add_argument("--waves", type=int, default=10, metavar="W",
                        help="waves of N sessions, one after the other (default 10)")
    parser.add_argument("--size", type=int, default=256, metavar="PX",
                        help="side of the phantoms the sessions load (default 256)")
    parser.add_argument("--burst", action="store_true",
                        help="each wave a burst of N new clients with gradio_client's default "
                        "time-outs, load and segment only (see the docstring)")
    parser.add_argument("--cache-mb", type=int, default=CACHE_MB, metavar="MB",
                        help="the server's --cache-mb; its memory must stay under its start "
                        f"plus MB (default {CACHE_MB})")
    parser.add_argument("--leak-mb", type=float, default=LEAK_MB, metavar="MB",
                        help=f"memory a session may leave behind (default {LEAK_MB:g})")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.waves < 2 or args.size < 64:
        parser.error("--sessions must be at least 1, --waves at least 2, --size at least 64")
    with tempfile.TemporaryDirectory(prefix="boltzformer-load-") as tmp:
        work = Path(tmp)
        checkpoint = args.checkpoint or build_model("tiny").save_pretrained(work / "model")
        started = time.perf_counter()
        report = run(checkpoint, args.sessions, args.waves, work, args.size, args.burst,
                     args.cache_mb)
        print(report.summary(args.leak_mb))
        print(f"({time.perf_counter() - started:.0f} s in all)")
    return 0 if report.passed(args.leak_mb) else 1


# --- a server in its own process (the load test and the tests) ---------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(checkpoint: Path, *args: str, env: dict[str, str] | None = None,
          stdout: int | IO[str] = subprocess.PIPE) -> tuple[subprocess.Popen, str]:
    """`boltzformer serve --checkpoint CHECKPOINT --port P ARGS` on a free port P in its own
    process, on this package's sources, one OpenMP thread, `env` added to the environment;
    output (text) to `stdout`. Returns it and the page's URL; Ctrl-C (SIGINT) stops it."""
    port = free_port()
    source = str(Path(__file__).resolve().parents[2])  # the folder holding boltzformer/
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "boltzformer.cli", "serve", "--checkpoint", str(checkpoint),
         "--port", str(port), *args], env=env, stdout=stdout, stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}/"


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> str:
    """The page at `url` once the server `proc` answers (with any HTTP status: a login's 401
    too). RuntimeError if it exits first or does not answer within `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except urllib.error.HTTPError as err:
            return err.read().decode()
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
