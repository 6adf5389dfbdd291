"""The web server's bounds under load (issue 26): the page config that gradio copies for every
new client shares the model; a bounded queue refuses a request at once ("busy, try again");
a request past the time limit is stopped with a one-line message; https with a self-signed
certificate made here (the `openssl` command). The burst of new clients itself runs against
a real server in tests/test_web_load.py."""

from __future__ import annotations

import copy
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
import torch
from conftest import SMALL_MODEL, start_serve
from gradio import utils as gradio_utils
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError, Status
from PIL import Image

import boltzformer
from boltzformer import cli
from boltzformer.apps import web, web_load, web_sessions
from boltzformer.apps import web_serve as serve

OVERRIDES = {k: v for k, v in SMALL_MODEL.items() if k != "preset"}


@pytest.fixture(scope="module")
def model() -> boltzformer.BoltzFormer:
    torch.manual_seed(0)
    return boltzformer.build_model("tiny", **OVERRIDES).eval()


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96), np.uint8)).save(path)
    return path


def _callbacks(config: dict) -> list:
    return [c["props"]["delete_callback"] for c in config["components"]
            if c.get("props", {}).get("delete_callback") is not None]


def test_the_config_gradio_copies_per_client_shares_the_model(model, tmp_path, image):
    """gradio deep-copies the page config for every page load and every new gradio_client;
    the session State's delete_callback in it must not drag the model and the cached
    encodings into the copy (issue 26: ~400 MB and 0.3 s of the GIL per new client)."""
    app = web.build_app(model, work_dir=tmp_path)
    handlers = _callbacks(app.config)[0].__self__
    handlers.load(None, str(image), web.AUTO_WINDOW, 2)
    assert len(handlers.cache) == 1
    for copied in (gradio_utils.safe_deepcopy(app.config), copy.deepcopy(app.config)):
        callback = _callbacks(copied)[0]
        assert callback.__self__ is handlers
        assert callback.__self__.model is model and callback.__self__.cache is handlers.cache


def test_a_request_past_the_time_limit_is_stopped_in_one_line(model, tmp_path, image):
    limits = web_sessions.Limits(max_seconds=0.0)  # every request is over it after a stage
    app = web.build_app(model, work_dir=tmp_path, limits=limits)
    handlers = _callbacks(app.config)[0].__self__
    with pytest.raises(gr.Error) as err:
        handlers.load(None, str(image), web.AUTO_WINDOW, 2)
    message = str(err.value.message)
    assert message.startswith("busy: this request took") and "\n" not in message
    assert "(the upload read)" in message and "limit of 0 s a request: try again" in message


@pytest.fixture
def gated(tmp_path) -> Iterator[tuple[str, threading.Event,
                                                               threading.Event]]:
    """A server with a queue of 1 whose model waits at its encoder until `release` is set
    (`entered` says a request got there)."""
    torch.manual_seed(0)
    model = boltzformer.build_model("tiny", **OVERRIDES).eval()
    entered, release = threading.Event(), threading.Event()
    original = model.encode_image

    def gate(images: torch.Tensor):
        entered.set()
        release.wait(timeout=120)
        return original(images)

    app = web.build_app(model, work_dir=tmp_path)
    model.encode_image = gate  # after build_app: it measures one encoding's size at start
    port = web_load.free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        web.launch(app, port=port, work_dir=tmp_path, block=False, quiet=True, queue_size=1)
        try:
            yield f"http://127.0.0.1:{port}/", entered, release
        finally:
            release.set()
            app.close()


def test_a_full_queue_refuses_at_once(gated, image):
    """One request runs (held at the encoder), one waits (the queue's 1 place): the next is
    refused at once, in one line; once the model is free, the two are answered."""
    url, entered, release = gated
    clients = [Client(url, verbose=False, download_files=False) for _ in range(3)]
    running = clients[0].submit(handle_file(str(image)), web.AUTO_WINDOW, 2, api_name="/load")
    assert entered.wait(timeout=60)
    waiting = clients[1].submit(handle_file(str(image)), web.AUTO_WINDOW, 2, api_name="/load")
    deadline = time.monotonic() + 60
    while waiting.status().code != Status.IN_QUEUE and time.monotonic() < deadline:
        time.sleep(0.1)
    assert waiting.status().code == Status.IN_QUEUE
    with pytest.raises((QueueError, AppError)) as err:
        clients[2].predict(handle_file(str(image)), web.AUTO_WINDOW, 2, api_name="/load")
    assert str(err.value) == "Queue is full! Please try again."
    release.set()
    for job in (running, waiting):
        assert "encoded once" in job.result(timeout=120)[-1]


@pytest.fixture
def certificate(tmp_path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM), made with openssl."""
    openssl = shutil.which("openssl")
    assert openssl, "this test makes its certificate with the openssl command: install it"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_ssl_and_queue_options_are_checked(model, certificate, tmp_path, capsys):
    cert, key = certificate
    assert serve.resolve_ssl(None, None) is None
    assert serve.resolve_ssl(cert, key) == (cert, key)
    with pytest.raises(ValueError, match="not a PEM certificate and its unencrypted key"):
        serve.resolve_ssl(key, cert)  # the two swapped
    with pytest.raises(ValueError, match="needs both --ssl-certfile and --ssl-keyfile"):
        serve.resolve_ssl(cert, None)
    with pytest.raises(ValueError, match="--ssl-keyfile .*missing.pem: no such file"):
        serve.resolve_ssl(cert, tmp_path / "missing.pem")
    checkpoint = str(model.save_pretrained(tmp_path / "ckpt"))
    for option, value in (("--queue-size", "0"), ("--time-limit", "0"),
                          ("--existence-threshold", "1.5")):
        assert cli.main(["serve", "--checkpoint", checkpoint, option, value]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and option in err


def test_https_with_a_self_signed_certificate(model, certificate, tmp_path):
    """`--ssl-certfile/--ssl-keyfile`: the login and the API over https, verified against
    the certificate made here; plain http gets nothing."""
    cert, key = certificate
    logins = tmp_path / "logins.txt"
    logins.write_text("ana:s3cret\n")
    checkpoint = model.save_pretrained(tmp_path / "ckpt")
    proc, url = start_serve(checkpoint, "--auth-file", str(logins), "--ssl-certfile",
                            str(cert), "--ssl-keyfile", str(key))
    https = url.replace("http://", "https://")
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=trusted, timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                try:
                    client.get(https)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the https server did not answer"
                    time.sleep(0.5)
            assert client.get(https + "config").status_code == 401
            assert client.post(https + "login", data={"username": "ana",
                                                      "password": "s3cret"}).is_success
            config = client.get(https + "config").json()
            assert any(d.get("api_name") == "segment" for d in config["dependencies"])
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "config", timeout=10)  # http: no answer from an https port
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0]
    assert f"at https://127.0.0.1:{url.split(':')[-1].strip('/')}" in output, output
    assert "Traceback" not in output, output
