"""The load test's short version: 3 concurrent `gradio_client` sessions x 10 waves against a
real `boltzformer serve` process with a login and the small test model (the full version is
`make load-test`), with 1024 x 1024 phantoms. A leak of 6 MB a session (an array kept per
request, planted in the server by hand) measured +19.5 % over the 27 sessions after the first
wave, over the 5 % the test allows; without it the server measured +1.3 to +2.4 % (with
Python's collector left to run when it would, what requests left in reference cycles made
the same measurement swing by +-20 %, and the test failed at random)."""

from __future__ import annotations

import torch

import boltzformer
from boltzformer.apps import web_load

SESSIONS, WAVES = 3, 10


def test_the_server_under_load(tmp_path, small_model, capsys):
    torch.manual_seed(0)
    checkpoint = boltzformer.build_model("tiny", **small_model).save_pretrained(tmp_path / "ckpt")
    report = web_load.run(checkpoint, SESSIONS, WAVES, tmp_path, size=1024)
    with capsys.disabled():
        print(f"\n{report.summary(web_load.MEMORY_BOUND)}")
    assert report.good == 2 * SESSIONS * WAVES and report.answered == report.good
    assert report.bad == 3 * SESSIONS * WAVES and report.bad_answered == report.bad
    assert not report.errors
    assert report.refused == 2 * WAVES  # nothing without the login
    assert report.isolated and len(report.results) == SESSIONS
    assert report.tracebacks == 0 and report.dropped == 2 * WAVES
    assert report.memory_ok(web_load.MEMORY_BOUND), report.rss_mb
    assert report.passed(web_load.MEMORY_BOUND)
