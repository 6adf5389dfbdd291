"""The web app (`boltzformer serve`) through its API, as `gradio_client` sees it: a real server
on a free local port, a tiny untrained model, real images, DICOM and a NIfTI volume."""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import highdicom as hd
import httpx
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import SMALL_MODEL, answering_existence, start_serve, wait_for
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import boltzformer
from boltzformer import Predictor, cli
from boltzformer.apps import web, web_load, web_sessions
from boltzformer.apps import web_serve as serve
from boltzformer.data.inputs import read_plane, read_volume
from boltzformer.data.medio import nifti_slices, read_image
from boltzformer.inference import viz

LIMITS = web_sessions.Limits(max_pixels=1100 * 1100, max_voxels=20_000)
AUTO = web.AUTO_WINDOW


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> boltzformer.BoltzFormer:
    torch.manual_seed(0)
    overrides = {k: v for k, v in SMALL_MODEL.items() if k != "preset"}
    return boltzformer.build_model("tiny", **overrides).eval()


@pytest.fixture(scope="module")
def encodes(model) -> list[tuple]:
    """Every `encode_image` call the server makes: one (B, 3, S, S) shape per call."""
    calls: list[tuple] = []
    original = model.encode_image

    def counting(images: torch.Tensor):
        calls.append(tuple(images.shape))
        return original(images)

    model.encode_image = counting
    return calls


@pytest.fixture(scope="module")
def server(model, encodes, tmp_path_factory) -> Iterator[tuple[str, gr.Blocks]]:
    work = tmp_path_factory.mktemp("web")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")  # gradio_client reads it too
        app = web.build_app(model, work_dir=work, examples=web.make_examples(work / "examples"),
                            limits=LIMITS)
        port = web_load.free_port()
        web.launch(app, port=port, work_dir=work, block=False, quiet=True, max_file_size_mb=1)
        try:
            yield f"http://127.0.0.1:{port}/", app
        finally:
            app.close()


@pytest.fixture
def client(server) -> Client:
    """A new browser session (its own state) on the server."""
    return Client(server[0], verbose=False, download_files=False)


@pytest.fixture
def lung(sample_dir) -> Path:
    return sample_dir / "biomedparse-demo" / "demo" / "01_CT_lung.png"


def _path(value) -> Path:
    """A file output (a FileData dict with download_files=False, or a path) -> local path."""
    return Path(value["path"] if isinstance(value, dict) else value)


def _png(value) -> np.ndarray:
    return np.asarray(Image.open(_path(value)))


def _load(client: Client, path: Path, window: str = AUTO, axis: int = 2) -> tuple:
    """preview, slice slider, window, axis, status (the export button is not in the API)."""
    return client.predict(handle_file(str(path)), window, axis, api_name="/load")


def _segment(client: Client, prompts: str, samples: int = 1, threshold: float = 0.5,
             *min_score: float) -> dict:
    """/segment; `min_score` (the page's "minimum mask score") only when given."""
    out = client.predict(prompts, samples, threshold, *min_score, api_name="/segment")
    names = ["overlay", "probability", "sampling", "uncertainty", "areas", "downloads", "status"]
    return dict(zip(names, out))


def test_image_is_encoded_once_and_answers_many_prompts(client, model, encodes, lung):
    before = len(encodes)
    preview, slider, window, axis, status = _load(client, lung)
    assert len(encodes) == before + 1  # the upload is encoded once
    image = read_image(lung)
    np.testing.assert_array_equal(_png(preview), image)
    assert not slider["visible"] and not window["visible"] and not axis["visible"]
    assert "01_CT_lung.png" in status and "encoded once" in status

    prompts = ["nodule in lung CT", "left lung in lung CT", "heart in chest CT"]
    out = _segment(client, "\n".join(prompts) + "\n\n")  # blank lines are skipped
    assert len(encodes) == before + 1  # the prompts reused the encoding
    reference = Predictor(model, seed=0)
    reference.set_image(image)
    expected = Predictor.threshold(reference.predict(prompts).prob)  # (3, H, W)
    assert len(encodes) == before + 2  # (the reference's own encoding)
    assert [row[0] for row in out["areas"]["data"]] == prompts
    assert [_path(f).name for f in out["downloads"]] == [
        "nodule-in-lung-ct_mask.png", "left-lung-in-lung-ct_mask.png", "heart-in-chest-ct_mask.png"]
    for row, download, mask in zip(out["areas"]["data"], out["downloads"], expected):
        np.testing.assert_array_equal(_png(download) > 0, mask)
        assert row[2] == mask.sum() and row[3] == pytest.approx(100 * mask.mean(), abs=1e-3)
    assert _png(out["overlay"]).shape[2] in (3, 4) and _png(out["probability"]).size > 0
    assert not out["uncertainty"]["visible"]  # one draw: no uncertainty map

    again = _segment(client, "liver in abdomen CT", samples=3)
    assert len(encodes) == before + 2  # still no new encoding
    assert "3 sampling draw(s)" in again["status"]
    # one sampling (and uncertainty) figure per prompt, one above the other
    assert _png(out["sampling"]).shape[0] == 3 * _png(again["sampling"]).shape[0]
    assert _png(_path(again["uncertainty"]["value"])).shape[1] > 600


def test_dicom_window_presets_reencode(client, encodes, sample_dir):
    dcm = sample_dir / "dicom" / "CT_lung_nodule.dcm"
    before = len(encodes)
    lung_preview, _, window, _, status = _load(client, dcm, "lung")
    assert window["visible"] and "DICOM slice" in status
    np.testing.assert_array_equal(_png(lung_preview), read_plane(dcm, "lung"))
    bone_preview = _load(client, dcm, "bone")[0]
    np.testing.assert_array_equal(_png(bone_preview), read_plane(dcm, "bone"))
    assert len(encodes) == before + 2  # one encoding per window
    out = _segment(client, "nodule in lung CT")
    assert len(encodes) == before + 2
    assert _png(out["downloads"][0]).shape == read_plane(dcm, None).shape[:2]


def test_a_dicom_slice_exports_a_dicom_seg_of_its_masks(client, sample_dir):
    dcm = sample_dir / "dicom" / "CT_lung_nodule.dcm"
    _load(client, dcm, "lung")
    prompts = ["nodule in lung CT", "left lung in lung CT"]
    masks = [_png(f) > 0 for f in _segment(client, "\n".join(prompts))["downloads"]]
    areas, downloads, status = client.predict("\n".join(prompts), 1, 0.5, api_name="/export")
    assert [_path(f).name for f in downloads] == ["segmentation.dcm"] and "DICOM SEG" in status
    seg = hd.seg.segread(_path(downloads[0]))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == prompts
    uid = pydicom.dcmread(dcm, stop_before_pixels=True).SOPInstanceUID
    pixels = seg.get_pixels_by_source_instance([uid], combine_segments=False)[0]
    for p, mask in enumerate(masks):  # the SEG holds what /segment showed
        np.testing.assert_array_equal(pixels[..., p].astype(bool), mask)
        assert areas["data"][p][2] == mask.sum()


def _write_volume(path: Path, shape=(40, 32, 6)) -> nib.Nifti1Image:
    rng = np.random.default_rng(0)
    data = rng.normal(0, 300, shape).astype(np.float32)
    data[10:20, 8:16, :] += 1000  # a bright block
    affine = np.diag([0.8, 0.7, 2.5, 1.0])
    affine[:3, 3] = [-12.0, 30.0, 5.0]
    image = nib.Nifti1Image(data, affine)
    nib.save(image, path)
    return image


def test_nifti_volume_slices_and_exports_aligned_masks(client, model, encodes, tmp_path):
    path = tmp_path / "ct.nii.gz"
    _write_volume(path)
    source = nib.load(path)  # the affine as the file stores it
    before = len(encodes)
    preview, slider, window, axis, status = _load(client, path, "abdomen")
    assert slider["visible"] and slider["maximum"] == 5 and slider["value"] == 3
    assert window["visible"] and axis["visible"]
    slices = nifti_slices(read_volume(path, "abdomen", 2).display, 2)
    np.testing.assert_array_equal(_png(preview)[..., 0], slices[3])
    assert "slice 3 of 6 along axis 2" in status
    client.predict(1, api_name="/slice")
    client.predict(1, api_name="/slice")  # the slice shown: nothing to encode
    assert len(encodes) == before + 2

    out = _segment(client, "liver in abdomen CT\nleft kidney in abdomen CT")
    assert [_path(f).name for f in out["downloads"]] == [
        "liver-in-abdomen-ct_slice1_mask.png", "left-kidney-in-abdomen-ct_slice1_mask.png"]
    assert _png(out["downloads"][0]).shape == (40, 32)

    areas, downloads, status = client.predict(
        "liver in abdomen CT\nleft kidney in abdomen CT", 1, 0.5, api_name="/export")
    expected = Predictor.threshold(
        Predictor(model, seed=0).predict_slices(slices, ["liver in abdomen CT",
                                                         "left kidney in abdomen CT"]).prob)
    for download, row, mask in zip(downloads, areas["data"], expected):
        written = nib.load(_path(download))
        assert _path(download).name.endswith("_mask.nii.gz")
        np.testing.assert_array_equal(written.affine, source.affine)
        assert written.shape == source.shape and written.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(np.asarray(written.dataobj) > 0,
                                      np.moveaxis(mask, 0, 2))
        assert row[2] == mask.sum()
    assert areas["headers"] == ["prompt", "colour", "voxels", "% of volume"]
    assert "all 6 slices" in status

    preview, slider, *_ = _load(client, path, "abdomen", axis=0)  # slices along axis 0
    assert slider["maximum"] == 39 and _png(preview).shape[:2] == (32, 6)


def _error(call) -> str:
    with pytest.raises(AppError) as err:
        call()
    message = str(err.value)
    assert "Traceback" not in message and "/tmp/gradio" not in message
    return message


def test_bad_input_is_a_message_and_the_next_request_works(client, server, lung, tmp_path):
    assert "no scan loaded" in _error(lambda: _segment(client, "nodule"))
    broken = tmp_path / "broken.png"
    broken.write_text("this is not a PNG")
    assert "broken.png: not a readable image" in _error(lambda: _load(client, broken))
    big = tmp_path / "big.png"
    Image.new("L", (1200, 1200)).save(big)
    assert "big.png: 1200x1200 = 1440000 pixels is over the limit" in _error(
        lambda: _load(client, big))
    huge = tmp_path / "huge.nii.gz"
    _write_volume(huge, shape=(40, 40, 20))
    assert "over the limit of 20000 voxels" in _error(lambda: _load(client, huge))
    heavy = tmp_path / "heavy.nii"
    heavy.write_bytes(bytes(1100 * 1024))
    with pytest.raises(ValueError, match="exceeds the maximum file size of 1048576 bytes"):
        _load(client, heavy)  # refused before the upload (the server refuses it too)
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello")
    assert "unknown file type" in _error(lambda: _load(client, unknown))
    # a failed upload leaves no image behind to answer prompts on
    assert "no scan loaded" in _error(lambda: _segment(client, "nodule"))

    _load(client, lung)
    assert "no prompt" in _error(lambda: _segment(client, " \n  "))
    assert "at most 8" in _error(lambda: _segment(client, "\n".join("abcdefghi")))
    assert "NIfTI volume" in _error(lambda: client.predict("liver", 1, 0.5, api_name="/export"))
    out = _segment(client, "nodule in lung CT")
    assert _png(out["downloads"][0]).shape == (1024, 1024)
    # another session is unaffected by this one's errors
    other = Client(server[0], verbose=False, download_files=False)
    assert "no scan loaded" in _error(lambda: _segment(other, "nodule"))


def test_phantom_examples_are_one_click_away(server, client):
    """Clicking an example (what /load_example answers) fills in a phantom and its prompts."""
    for index, site in enumerate(["CT_chest", "CT_abdomen", "MRI_abdomen"]):
        file, prompts = client.predict(index, api_name="/load_example")
        assert site in file["value"]["orig_name"] and len(prompts["value"].splitlines()) == 3
    _load(client, _path(file["value"]))
    out = _segment(client, prompts["value"])
    assert len(out["downloads"]) == 3 and _png(out["downloads"][0]).shape == (256, 256)


def test_serve_min_score_answers_unsure_prompts_not_found(model, lung, tmp_path):
    """`serve --min-score`: the page's Predictor gates answers by their mask score and the
    status says which prompts were not found (an untrained model is never sure of a mask)."""
    handlers = web._Handlers(model, 0, LIMITS, tmp_path, web_sessions.EncodingCache(),
                             min_score=1.0)
    session = handlers.load(None, str(lung), AUTO, 2)[0]
    *_, downloads, status = handlers.segment(session, "nodule in lung CT\nleft lung", 1, 0.5)
    assert '"nodule in lung CT": not found (empty mask); "left lung": not found' in status
    assert all(np.asarray(Image.open(d)).max() == 0 for d in downloads)
    plain = web._Handlers(model, 0, LIMITS, tmp_path, web_sessions.EncodingCache())
    session = plain.load(None, str(lung), AUTO, 2)[0]
    assert "not found" not in plain.segment(session, "nodule in lung CT", 1, 0.5)[-1]


def test_serve_existence_threshold_is_every_sessions(lung, tmp_path):
    """`serve --existence-threshold`: a head that answers 0.0067 for every prompt hides every
    mask at the default 0.5 and none at 0.005; out of range is refused at build time."""
    torch.manual_seed(0)
    overrides = {k: v for k, v in SMALL_MODEL.items() if k != "preset"}
    with_head = answering_existence(
        boltzformer.build_model("tiny", **overrides, existence_head=True), -5.0)
    for threshold, hidden in ((0.5, True), (0.005, False)):
        handlers = web._Handlers(with_head, 0, LIMITS, tmp_path, web_sessions.EncodingCache(),
                                 existence_threshold=threshold)
        session = handlers.load(None, str(lung), AUTO, 2)[0]
        *_, downloads, status = handlers.segment(session, "left lung", 1, 0.5)
        assert ('"left lung": not found' in status) is hidden
        assert bool(np.asarray(Image.open(downloads[0])).max() == 0) is hidden
    with pytest.raises(ValueError, match=r"existence_threshold must be in \[0, 1\]"):
        web.build_app(with_head, work_dir=tmp_path, existence_threshold=-0.1)


def test_the_pages_minimum_mask_score_gates_each_request(client, lung):
    """The page's "minimum mask score" slider: 1.0 answers "not found" with empty masks (an
    untrained model is never that sure), the next request at 0 paints again, and left out
    (an API caller of before) it is the server's (0 here); out of range is one line."""
    _load(client, lung)
    gated = _segment(client, "nodule in lung CT\nleft lung", 1, 0.5, 1.0)
    assert '"nodule in lung CT": not found (empty mask); "left lung": not found' in \
        gated["status"]
    assert all(_png(d).max() == 0 for d in gated["downloads"])
    for answer in (_segment(client, "left lung", 1, 0.5, 0.0), _segment(client, "left lung")):
        assert "not found" not in answer["status"] and _png(answer["downloads"][0]).max() > 0
    assert "1.5 is greater than maximum value 1" in _error(  # the slider's own bound
        lambda: _segment(client, "left lung", 1, 0.5, 1.5))


# --- bounded memory, login ---------------------------------------------------------------------
LOGIN = ("ana", "s3cret:x")  # a colon in the password is allowed


@pytest.fixture(scope="module")
def guarded(model, tmp_path_factory) -> Iterator[str]:
    """A server with a login and room for one session's encoding."""
    work = tmp_path_factory.mktemp("guarded")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        app = web.build_app(model, work_dir=work, limits=LIMITS,
                            cache=web_sessions.EncodingCache(max_sessions=1))
        port = web_load.free_port()
        web.launch(app, port=port, work_dir=work, block=False, quiet=True, auth=[LOGIN])
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            app.close()


def _expected_mask(model, image: np.ndarray, prompt: str) -> np.ndarray:
    reference = Predictor(model, seed=0)
    reference.set_image(image)
    return Predictor.threshold(reference.predict([prompt]).prob)[0]


def test_an_evicted_session_is_told_to_load_again(guarded, model, lung, sample_dir):
    """The cache holds one session: a second session's upload evicts the first, which then
    gets a one-line message, never an answer from the other session's image."""
    heart = sample_dir / "biomedparse-demo" / "demo" / "08_MRI_heart.png"
    first, second = (Client(guarded, auth=LOGIN, verbose=False, download_files=False)
                     for _ in range(2))
    _load(first, lung)
    _load(second, heart)
    message = _error(lambda: _segment(first, "nodule in lung CT"))
    assert message.count("\n") == 0 and message.startswith("01_CT_lung.png was dropped")
    assert "1 most recently used" in message and message.endswith("load it again")
    heart_mask = _png(_segment(second, "left ventricle")["downloads"][0]) > 0
    np.testing.assert_array_equal(heart_mask,
                                  _expected_mask(model, read_image(heart), "left ventricle"))
    _load(first, lung)  # loaded again, it answers on its own image
    lung_mask = _png(_segment(first, "nodule in lung CT")["downloads"][0]) > 0
    np.testing.assert_array_equal(lung_mask,
                                  _expected_mask(model, read_image(lung), "nodule in lung CT"))
    assert "was dropped" in _error(lambda: _segment(second, "left ventricle"))


def test_the_encoding_cache_evicts_the_least_recently_used(model):
    one = Predictor(model)
    one.set_image(np.zeros((100, 100), np.uint8))
    scan = web_sessions.Scan("a.png", np.zeros((1, 100, 100), np.uint8), None, 2, False)
    encoding = web_sessions.Encoding(scan, 0, one, web_sessions.feature_bytes(model))
    size = encoding.nbytes
    assert size == 100 * 100 + 100 * 100 * 3 + web_sessions.feature_bytes(model) > 40_000
    cache = web_sessions.EncodingCache(max_sessions=3, max_bytes=2 * size)
    cache.put("a", encoding)
    cache.put("b", encoding)
    assert cache.get("a") is encoding  # "a" is now the most recently used: "b" goes first
    cache.put("c", encoding)  # over the bytes (not the sessions): one evicted
    assert cache.get("b") is None and cache.get("a") is encoding and len(cache) == 2
    assert cache.nbytes == 2 * size
    small = web_sessions.EncodingCache(max_sessions=3, max_bytes=size - 1)
    with pytest.raises(ValueError, match=r"^a\.png needs 0 MB in memory, over this server's"):
        small.put("a", encoding)
    assert len(small) == 0


def test_the_login_guards_the_page_the_api_and_the_files(guarded, lung):
    with pytest.raises(ValueError):
        Client(guarded, verbose=False)  # no login: not even the API's description
    with pytest.raises(ValueError, match="Could not login"):
        Client(guarded, auth=("ana", "s3cret"), verbose=False)
    client = Client(guarded, auth=LOGIN, verbose=False, download_files=False)
    preview = _load(client, lung)[0]
    file_url = preview["url"]
    for url in (guarded + "config", guarded + "gradio_api/info", file_url):
        assert httpx.get(url).status_code == 401, url
    assert httpx.post(guarded + "gradio_api/upload",
                      files={"files": ("a.png", lung.read_bytes())}).status_code == 401
    assert httpx.post(guarded + "gradio_api/queue/join", json={
        "data": ["nodule", 1, 0.5], "fn_index": 0, "session_hash": "x"}).status_code == 401
    with httpx.Client() as session:  # the right login opens everything
        assert session.post(guarded + "login", data=dict(zip(("username", "password"),
                                                              LOGIN))).status_code == 200
        response = session.get(file_url)
        assert response.status_code == 200
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(response.content))),
                                      read_image(lung))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host):
    assert serve.is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "lab-server"])
def test_hosts_beyond_this_machine(host):
    assert not serve.is_loopback(host)


def test_serve_beyond_localhost_needs_a_login(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(serve.AUTH_ENV, raising=False)
    base = ["serve", "--checkpoint", str(checkpoint), "--port", str(web_load.free_port())]

    def error(*args: str) -> str:
        assert cli.main([*base, *args]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        return err

    err = error("--host", "0.0.0.0")
    assert "--host 0.0.0.0 serves scans" in err and "--auth-file" in err
    assert "BOLTZFORMER_AUTH=user:password" in err and "--no-auth" in err
    logins = tmp_path / "logins.txt"
    logins.write_text("# lab\nana:s3cret\n\nbob-without-password\n")
    err = error("--host", "0.0.0.0", "--auth-file", str(logins))
    assert f"--auth-file {logins}, line 4: expected user:password" in err and "s3cret" not in err
    err = error("--auth-file", str(tmp_path / "missing.txt"))
    assert "missing.txt: cannot read it" in err
    monkeypatch.setenv(serve.AUTH_ENV, "ana:s3cret")
    assert "--no-auth and $BOLTZFORMER_AUTH contradict" in error("--host", "0.0.0.0",
                                                                 "--no-auth")
    assert serve.resolve_auth("0.0.0.0", None, False, {serve.AUTH_ENV: "ana:s3:cret"}) == [
        ("ana", "s3:cret")]
    assert serve.resolve_auth("0.0.0.0", None, True, {}) is None
    assert serve.resolve_auth("127.0.0.1", None, False, {}) is None
    good = tmp_path / "good.txt"
    good.write_text("ana:s3cret\n bob : pass word \n")
    assert serve.resolve_auth("127.0.0.1", good, False, {}) == [("ana", "s3cret"),
                                                                ("bob", " pass word")]


# --- the figures --------------------------------------------------------------------------------
def test_each_prompt_is_tinted_in_its_own_colour(make_disc):
    """Two prompts' masks on a black image: each shows up tinted in its colour, where it is."""
    probs = np.stack([make_disc(64, 16, 32, 10), make_disc(64, 48, 32, 10)]).astype(np.float32)
    figure = viz.to_array(viz.prompts_overlay(np.zeros((64, 64)), probs, ["left", "right"]))
    columns = []
    for p in range(2):
        rgb = np.array([int(viz.prompt_color(p)[i : i + 2], 16) for i in (1, 3, 5)])
        tinted = np.abs(figure.astype(int) - np.round(0.35 * rgb)).max(axis=-1) <= 2
        assert tinted.sum() > 500
        columns.append(np.nonzero(tinted)[1].mean())
    assert columns[0] < figure.shape[1] / 2 < columns[1]
    maps = viz.to_array(viz.probability_maps(probs, ["left", "right"]))
    assert maps.shape[1] > maps.shape[0]  # side by side


# --- the command -------------------------------------------------------------------------------
@pytest.fixture
def checkpoint(model, tmp_path) -> Path:
    return model.save_pretrained(tmp_path / "ckpt")


def test_serve_without_a_model_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["serve"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "make demo" in err and "boltzformer train" in err


@pytest.mark.parametrize("broken", ["weights", "config"])
def test_serve_with_a_broken_checkpoint_is_one_line(checkpoint, broken, capsys):
    if broken == "weights":
        (checkpoint / "model.safetensors").write_bytes(b"\0" * 40)
    else:
        (checkpoint / "config.json").write_text("{")
    port = str(web_load.free_port())
    assert cli.main(["serve", "--checkpoint", str(checkpoint), "--port", port]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("boltzformer serve: error: ") and str(checkpoint) in err


def test_the_serve_command_serves_a_training_run(tiny_run):
    proc, url = start_serve(tiny_run)
    try:
        page = wait_for(url, proc)
        assert "<title>BoltzFormer" in page or "BoltzFormer" in page
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C, as soon as the page answers
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert f"serving {tiny_run / 'best'} at" in output and "Traceback" not in output, output
    assert output.rstrip().endswith("stopped")



def test_a_windowed_model_is_served_at_the_images_own_size(tmp_path):
    """A model with window_size answers the page by sliding windows: its masks are the
    windowed Predictor's, and the session's memory counts every window's encoding."""
    torch.manual_seed(0)
    overrides = {k: v for k, v in SMALL_MODEL.items() if k != "preset"}
    windowed = boltzformer.build_model("tiny", **overrides, window_size=64).eval()
    image = np.random.default_rng(0).integers(0, 256, (150, 200), dtype=np.uint8)
    path = tmp_path / "scan.png"
    Image.fromarray(image).save(path)
    handlers = web._Handlers(windowed, 0, LIMITS, tmp_path, web_sessions.EncodingCache())
    session = handlers.load(None, str(path), AUTO, 2)[0]
    *_, downloads, _status = handlers.segment(session, "liver", 1, 0.5)
    reference = Predictor(windowed, seed=0, progress=False)
    reference.set_image(read_image(path))
    expected = Predictor.threshold(reference.predict(["liver"]).prob)[0]
    np.testing.assert_array_equal(np.asarray(Image.open(downloads[0])) > 0, expected)
    encoding = handlers.cache.get(session.key)
    assert encoding is not None
    features = encoding.nbytes - encoding.scan.slices.nbytes - encoding.image.nbytes
    assert features >= 15 * handlers.feature_bytes  # 5 x 3 windows, each one image's worth

    whole = web._Handlers(windowed, 0, LIMITS, tmp_path, web_sessions.EncodingCache(),
                          windows={"window_size": 0})  # `serve --window-size 0`
    session = whole.load(None, str(path), AUTO, 2)[0]
    assert whole.cache.get(session.key).predictor.windows is None
