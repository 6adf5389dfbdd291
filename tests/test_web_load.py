"""The load test's short versions (the full ones are `make load-test`), against a real
`boltzformer serve` process with a login:

- waves: 3 concurrent `gradio_client` sessions x 10 waves with the small test model and
  1024 x 1024 phantoms, good and bad requests. The leak check is the median slope of the
  server's memory over the sessions served (`Report.leak_mb`), not a ratio of two readings:
  one step of the allocator, which made a 5 % bound fail by noise once (+5.1 %), moves it
  little. Measured on 2026-12-02 (`pytest -s tests/test_web_load.py -k under_load`): the
  server as it is, +0.75, +1.51 and +1.74 MB a session (under the 3 MB bound); with a leak planted
  by hand (an array kept per /segment, one a session) of 3 MB, +3.81, of 4 MB, +5.14 MB a
  session (both fail, as they should).
- bursts: 2 bursts of 8 new clients at once, with gradio_client's default time-outs, on the
  untrained `tiny` model (issue 26: every new client's first request made the server copy
  the model and every cached encoding, and the clients timed out while its memory grew).
"""

from __future__ import annotations

import torch

import boltzformer
from boltzformer.apps import web_load

SESSIONS, WAVES = 3, 10
#: MB a session may leave behind at 1024 x 1024 (a 1024 x 1024 RGB image is 3 MB): above the
#: `make load-test` bound at 256 x 256, as the server as it is measured +0.75, +1.51 and
#: +1.74 MB a session over these 30 sessions
LEAK_MB = 3.0
BURST, BURSTS, BURST_CACHE_MB = 8, 2, 256


def test_the_server_under_load(tmp_path, small_model, capsys):
    torch.manual_seed(0)
    checkpoint = boltzformer.build_model("tiny", **small_model).save_pretrained(tmp_path / "ckpt")
    report = web_load.run(checkpoint, SESSIONS, WAVES, tmp_path, size=1024)
    with capsys.disabled():
        print(f"\n{report.summary(LEAK_MB)}")
    assert report.good == 2 * SESSIONS * WAVES and report.answered == report.good
    assert report.bad == 3 * SESSIONS * WAVES and report.bad_answered == report.bad
    assert not report.errors
    assert report.refused == 2 * WAVES  # nothing without the login
    assert report.isolated and len(report.results) == SESSIONS
    assert report.tracebacks == 0 and report.dropped == 2 * WAVES
    assert len(report.after_mb) == WAVES and report.leak_mb <= LEAK_MB, report.after_mb
    assert max(report.peak_mb) <= report.bound_mb, report.peak_mb


def test_bursts_of_new_clients(tmp_path, capsys):
    """Every request of two back-to-back bursts answered or refused as busy in one line (no
    client time-out); the server's memory at all times under its start + --cache-mb."""
    torch.manual_seed(0)
    checkpoint = boltzformer.build_model("tiny").save_pretrained(tmp_path / "ckpt")
    report = web_load.run(checkpoint, BURST, BURSTS, tmp_path, burst=True,
                          cache_mb=BURST_CACHE_MB)
    with capsys.disabled():
        print(f"\n{report.summary(web_load.LEAK_MB)}")
    assert not report.errors  # a client time-out, or any answer but a result or "busy"
    assert report.answered + report.busy == report.good and report.answered > 0
    assert len(report.connect) == BURST * BURSTS  # every new client started its session
    assert max(report.peak_mb) <= report.start_mb + BURST_CACHE_MB, report.peak_mb
    assert report.isolated and report.tracebacks == 0
