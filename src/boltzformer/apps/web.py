"""The web app behind `boltzformer serve`: upload a scan, type prompts, see the masks.

`build_app(model, ...)` returns a Gradio `Blocks`; `launch(app, ...)` serves it with the
settings that keep it offline (no analytics, no share link, system fonts, client-side
rendering) and, given `auth`, a login for the page and the API. Each browser session has
its own `Predictor` around the one shared model: an upload (or a change of slice, axis or
window) is encoded once, and every set of prompts after it reuses that encoding. The
encodings (and the scans they came from) live in one `EncodingCache` of the most recently
used sessions, not in the sessions' state, so the server's memory is bounded whatever the
number of sessions: a session evicted from it is told to load its image again (all of that,
without gradio, is `apps/web_sessions.py`). Reading,
windowing and NIfTI write-back are `data.inputs` and `data.medio`; the figures are
`viz`. Every image the server sends is a PNG file of the request's own folder (gradio copies
files into its cache atomically; the arrays it encodes itself it rewrites in place, which a
concurrent download of an identical image can see half-written).

API (what `gradio_client` calls; one Client is one session):
    /load     (file, window, axis)          -> preview, slice, window, axis, status
    /slice    (index)                       -> preview, status
    /segment  (prompts, samples, threshold) -> overlay, probability, sampling, uncertainty,
                                               areas, downloads, status
    /export   (prompts, samples, threshold) -> areas, downloads, status   (NIfTI volumes:
                                               NIfTI masks; DICOM slices: a DICOM SEG)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from boltzformer.apps.web_sessions import (
    QUEUE_SIZE,
    Encoding,
    EncodingCache,
    Limits,
    Session,
    existence_note,
    feature_bytes,
    read_scan,
)
from boltzformer.data import generate_phantoms
from boltzformer.data.dicom_seg import write_dicom_seg
from boltzformer.data.inputs import file_names
from boltzformer.data.medio import WINDOWS, stack_slices, write_nifti_mask
from boltzformer.inference import viz
from boltzformer.inference.predict_files import SEG_FILE
from boltzformer.inference.predictor import Predictor
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.modeling.existence import (
    check_min_score,
    model_existence_threshold,
)
from boltzformer.modeling.text_encoder import check_prompts

log = logging.getLogger(__name__)

AUTO_WINDOW = "auto"
#: The export button's label for a NIfTI volume and for a DICOM slice.
EXPORT_NIFTI = "Segment the whole volume (NIfTI masks)"
EXPORT_SEG = "Download the masks as a DICOM SEG"
MAX_PROMPTS = 8
MAX_SAMPLES = 16
#: Sessions whose small state (not their encodings) gradio keeps; older ones start afresh.
STATE_SESSIONS = 2000
_EXPECTED = (ValueError, OSError, RuntimeError, MemoryError)
# glibc's allocator: the web server's threads would each grow a heap of their own and keep
# what they freed; `_release_memory` gives it back (None elsewhere: other allocators differ)
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform == "linux" else None
_GLIBC = (_LIBC if _LIBC is not None and hasattr(_LIBC, "malloc_trim")
          and hasattr(_LIBC, "mallopt") else None)
_M_ARENA_MAX = -8


def parse_prompts(text: str | None) -> list[str]:
    """One prompt per line (blank lines skipped): 1 to MAX_PROMPTS of them."""
    prompts = check_prompts([line for line in (text or "").splitlines() if line.strip()])
    if len(prompts) > MAX_PROMPTS:
        raise ValueError(f"{len(prompts)} prompts: give at most {MAX_PROMPTS} at a time")
    return prompts


def make_examples(folder: Path, images: int = 3) -> list[list[str]]:
    """Draw a few phantoms into `folder`; per image its path and three prompts (the two
    smallest targets and the largest), chest CT first."""
    generate_phantoms(folder, images=images, size=256, seed=0, test_fraction=0.0, workers=1)
    data = json.loads((folder / "train.json").read_text())
    examples = []
    for image in data["images"]:
        masks = sorted((a for a in data["annotations"] if a["image_id"] == image["id"]),
                       key=lambda a: a["area_fraction"])
        chosen = [*masks[:2], masks[-1]]
        prompts = "\n".join(a["sentences"][0]["sent"] for a in chosen)
        examples.append([str(folder / "train" / image["file_name"]), prompts])
    return sorted(examples, key=lambda e: "chest" not in e[0])


def _release_memory() -> None:
    """Free what a request left in reference cycles (up to ~700 MB after a wave of 1024 x
    1024 scans, kept until Python's collector happened to run), then hand the memory glibc
    holds free back to the system (its heaps keep it otherwise, and the server's resident
    memory would creep up with every request)."""
    gc.collect()
    if _GLIBC is not None:
        _GLIBC.malloc_trim(0)


def _guard(fn: Callable) -> Callable:
    """Turn any error of a handler (a `_Handlers` method) into a one-line message in the page
    (gr.Error); the traceback of an unexpected one goes to the server's log only. Starts the
    request's clock (`_Handlers.in_time`); frees memory after."""

    @functools.wraps(fn)
    def wrapper(handlers: _Handlers, *args: Any, **kwargs: Any) -> Any:
        handlers.clock.started = time.monotonic()
        try:
            return fn(handlers, *args, **kwargs)
        except gr.Error:
            raise
        except _EXPECTED as err:
            message = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            if isinstance(err, MemoryError):
                message = "out of memory: try a smaller file, fewer prompts or fewer samples"
            raise gr.Error(message, print_exception=False) from None
        except Exception as err:
            log.exception("request failed")
            raise gr.Error(f"internal error ({type(err).__name__}: {err}); the server "
                           "keeps running", print_exception=False) from None
        finally:
            _release_memory()

    return wrapper


class _Handlers:
    """The app's event handlers: each call's `Session` says whose encoding in `cache` to use."""

    def __init__(self, model: BoltzFormer, seed: int, limits: Limits, work_dir: Path,
                 cache: EncodingCache, min_score: float = 0.0,
                 existence_threshold: float | None = None,
                 windows: dict[str, Any] | None = None) -> None:
        self.model, self.seed, self.limits, self.work_dir = model, seed, limits, work_dir
        self.windows = windows or {}  # Predictor's window_size and window_overlap
        self.min_score, self.existence_threshold = min_score, existence_threshold
        self.cache, self.feature_bytes = cache, feature_bytes(model)
        self.clock = threading.local()  # .started: when the thread's request began (`_guard`)

    def __deepcopy__(self, memo: dict[int, Any]) -> _Handlers:
        """Shared, never copied. Gradio deep-copies the page's config on every page load and
        every /config request (each new gradio_client), and the config holds the session
        State's delete_callback, a method of this: a copy took the model and every cached
        encoding with it (five times over, as gradio retries level by level once the cache's
        lock refuses to be copied), 0.2 to 0.3 s of the GIL and ~400 MB a request, so a burst
        of new clients stalled the server past their time-outs and its memory ballooned."""
        return self

    def in_time(self, done: str) -> None:
        """Between a request's stages (`done`: the stage just finished): a one-line "busy"
        error once it has run past the server's time limit, so that no request holds the
        model for long (one stage may overrun it: a running computation is not cut off)."""
        elapsed = time.monotonic() - self.clock.started
        if elapsed > self.limits.max_seconds:
            raise TimeoutError(
                f"busy: this request took {elapsed:.1f} s ({done}), over this server's limit "
                f"of {self.limits.max_seconds:g} s a request: try again, with fewer prompts, "
                "fewer sampling draws or a smaller file")

    def end_session(self, session: Session | None) -> None:
        """Gradio's delete_callback: the session expired; free its encoding and files."""
        if session is not None:
            self.cache.pop(session.key)
            session.close()

    def _loaded(self, session: Session | None) -> Encoding:
        """The session's encoding; a one-line error when it loaded nothing or was evicted."""
        if session is None or session.loaded is None:
            raise ValueError("no scan loaded: upload an image, a DICOM slice or a volume first")
        encoding = self.cache.get(session.key)
        if encoding is None:
            raise ValueError(
                f"{session.loaded} was dropped from this server's memory to make room for "
                f"other sessions (it keeps the {self.cache.max_sessions} most recently used): "
                "load it again")
        return encoding

    @staticmethod
    def _where(encoding: Encoding) -> str:
        scan = encoding.scan
        if scan.volume is None:
            return scan.name
        return (f"{scan.name}, slice {encoding.index} of {len(scan.slices)} along axis "
                f"{scan.axis}")

    @staticmethod
    def _preview(session: Session, encoding: Encoding) -> str:
        """The encoded slice as a PNG of a new folder of the session's."""
        return _save_png(session.run_folder() / "input.png", encoding.image)

    @_guard
    def load(self, session: Session | None, file: str | None, window: str, axis: int) -> tuple:
        """Read the upload and encode its (middle) slice; show or hide the scan's controls.
        Starts the browser session's `Session` on the first call."""
        session = session or Session(self.work_dir)
        self.cache.pop(session.key)  # a failed upload leaves no image to answer prompts on
        session.loaded = None
        if file is None:
            hide = gr.update(visible=False)
            return (session, None, hide, hide, hide, hide,
                    "Upload an image, a DICOM slice or a volume.")
        path = Path(file)
        try:
            scan = read_scan(path, None if window == AUTO_WINDOW else window, int(axis),
                             self.limits)
        except (ValueError, OSError) as err:  # name the upload, not the server's copy of it
            raise ValueError(str(err).replace(str(path), path.name)) from None
        self.in_time("the upload read")
        predictor = Predictor(self.model, seed=self.seed,  # its score gate: set per request
                              existence_threshold=self.existence_threshold, progress=False,
                              **self.windows)
        index = len(scan.slices) // 2
        encoding = Encoding(scan, index, predictor, self.feature_bytes)
        predictor.set_image(scan.slices[index])
        self.cache.put(session.key, encoding)
        session.loaded = scan.name
        image = encoding.image
        is_vol = scan.volume is not None
        slider = gr.update(visible=is_vol, minimum=0, maximum=max(len(scan.slices) - 1, 1),
                           value=index)
        kind = "volume" if is_vol else ("DICOM slice" if scan.windowable else "image")
        status = (f"**{self._where(encoding)}** ({kind}, {image.shape[1]}x{image.shape[0]}) "
                  "encoded once; every prompt below reuses it.")
        show = gr.update(visible=is_vol)
        export = gr.update(visible=is_vol or scan.dicom is not None,
                           value=EXPORT_SEG if scan.dicom is not None else EXPORT_NIFTI)
        return (session, self._preview(session, encoding), slider,
                gr.update(visible=scan.windowable), show, export, status)

    @_guard
    def show_slice(self, session: Session, index: int) -> tuple:
        """Encode another slice of the volume (nothing to do if it is the one shown)."""
        encoding, index = self._loaded(session), int(index)
        scan = encoding.scan
        if not 0 <= index < len(scan.slices):
            raise ValueError(f"slice {index} does not exist: the scan has slices "
                             f"0..{len(scan.slices) - 1}")
        if index != encoding.index:
            encoding.predictor.set_image(scan.slices[index])
            encoding.index = index
        return self._preview(session, encoding), f"**{self._where(encoding)}** encoded once."

    def _predictor(self, encoding: Encoding, min_score: float | None) -> Predictor:
        """The session's Predictor, gating this request's answers at `min_score` (the page's
        "minimum mask score"; None: the server's `--min-score`)."""
        predictor = encoding.predictor
        predictor.min_score = check_min_score(
            self.min_score if min_score is None else float(min_score), "the minimum mask score")
        return predictor

    @_guard
    def segment(self, session: Session, text: str, samples: int, threshold: float,
                min_score: float | None = None) -> tuple:
        """Answer the prompts on the encoded slice: overlay, probability, sampling panels,
        uncertainty (samples > 1), areas, mask PNGs. An answer whose mask score is below
        `min_score` is "not found" (None: the server's)."""
        encoding = self._loaded(session)
        prompts, samples = parse_prompts(text), int(samples)
        predictor, image = self._predictor(encoding, min_score), encoding.image
        pred = predictor.predict(prompts, samples=samples)
        self.in_time("the masks computed, not yet drawn")
        masks = Predictor.threshold(pred.prob, threshold)
        where = self._where(encoding)
        folder = session.run_folder()
        overlay = viz.to_array(viz.prompts_overlay(image, pred.prob, prompts,
                                                   threshold=threshold, title=where))
        probability = viz.to_array(viz.probability_maps(pred.prob, prompts))
        self.in_time("the masks drawn, not the sampling panels")
        traces = [predictor.sampling(p) for p in prompts]  # one decoder pass per prompt
        sampling = _stack([
            viz.sampling_figure(image, t.keep_masks, t.prob, title=f'"{t.prompt}"',
                                threshold=threshold)
            for t in traces
        ])
        uncertainty = gr.update(value=None, visible=False)
        if pred.std is not None:
            self.in_time("the sampling panels drawn, not the uncertainty maps")
            uncertainty = gr.update(visible=True, value=_save_png(
                folder / "uncertainty.png", _stack([
                    viz.uncertainty_figure(image, pred.prob[i], pred.std[i], caption=p,
                                           samples=samples, threshold=threshold)
                    for i, p in enumerate(prompts)
                ])))
        suffix = "" if encoding.scan.volume is None else f"_slice{encoding.index}"
        downloads = []
        for mask, name in zip(masks, file_names(prompts)):
            downloads.append(_save_png(folder / f"{name}{suffix}_mask.png",
                                       mask.astype(np.uint8) * np.uint8(255)))
        areas = _areas(prompts, masks, "pixels", "image")
        status = (f"**{where}**: {len(prompts)} prompt(s), {samples} sampling draw(s)."
                  + existence_note(prompts, pred.found))
        return (_save_png(folder / "overlay.png", overlay),
                _save_png(folder / "probability.png", probability),
                _save_png(folder / "sampling.png", sampling),
                uncertainty, areas, downloads, status)

    def refresh(self, session: Session, text: str, samples: int, threshold: float,
                min_score: float | None = None) -> tuple:
        """After a new upload or slice: segment again if there are prompts, else keep the
        results as they are."""
        if session is None or session.loaded is None or not (text or "").strip():
            return tuple(gr.skip() for _ in range(7))
        return self.segment(session, text, samples, threshold, min_score)

    @_guard
    def export(self, session: Session, text: str, samples: int, threshold: float,
               min_score: float | None = None,
               progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008
        """A NIfTI volume: every slice segmented, masks as NIfTI with the input's affine. A
        DICOM slice: its masks as one DICOM SEG referencing it. (`progress`: gradio shows
        predict_slices' progress bar in the page.)"""
        encoding = self._loaded(session)
        scan = encoding.scan
        if scan.volume is None and scan.dicom is None:
            raise ValueError("the export needs a NIfTI volume (NIfTI masks) or a DICOM slice "
                             "(a DICOM SEG): upload a .nii, .nii.gz or .dcm")
        prompts = parse_prompts(text)
        predictor, folder = self._predictor(encoding, min_score), session.run_folder()
        if scan.dicom is not None:
            pred = predictor.predict(prompts, samples=int(samples))
            masks = Predictor.threshold(pred.prob, threshold)  # (P, H, W)
            write_dicom_seg([scan.dicom], masks[:, None], prompts, folder / SEG_FILE)
            status = (f"**{scan.name}**: {len(prompts)} prompt(s) in one DICOM SEG over this "
                      "slice (a segment per prompt)." + existence_note(prompts, pred.found))
            return _areas(prompts, masks, "pixels", "image"), [str(folder / SEG_FILE)], status
        assert scan.volume is not None
        if len(prompts) * scan.slices.size > self.limits.max_voxels:
            raise ValueError(
                f"{len(prompts)} prompts x {scan.slices.size} voxels is over this server's "
                f"limit of {self.limits.max_voxels}: export fewer prompts at a time"
            )
        pred = predictor.predict_slices(scan.slices, prompts, samples=int(samples),
                                        progress=True)
        masks = Predictor.threshold(pred.prob, threshold)  # (P, N, A, B)
        reference = scan.volume.reference
        downloads = []
        for mask, name in zip(masks, file_names(prompts)):
            path = folder / f"{name}_mask.nii.gz"
            write_nifti_mask(stack_slices(mask, scan.axis).reshape(reference.shape), reference,
                             path)
            downloads.append(str(path))
        status = (f"**{scan.name}**: {len(prompts)} prompt(s) on all {len(scan.slices)} slices; "
                  "the NIfTI masks keep the input's affine and header."
                  + existence_note(prompts, pred.found))
        return _areas(prompts, masks, "voxels", "volume"), downloads, status


AREA_COLUMNS = ("prompt", "colour", "pixels", "% of image")


def _save_png(path: Path, array: np.ndarray) -> str:
    """Write `array` (H, W) or (H, W, 3) uint8 as a PNG at `path`; its path as a string."""
    Image.fromarray(array).save(path)
    return str(path)


def _stack(figures: list[Figure]) -> np.ndarray:
    """Figures one above the other, as one (H, W, 3) uint8 image (narrower ones padded white)."""
    arrays = [viz.to_array(f) for f in figures]
    width = max(a.shape[1] for a in arrays)
    return np.concatenate([
        np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)), constant_values=255) for a in arrays
    ])


def _areas(prompts: list[str], masks: np.ndarray, unit: str, of: str) -> pd.DataFrame:
    """Per prompt: its colour, the mask's size in `unit` and its share of the `of` (image or
    volume), in %, from masks (P, ...) bool."""
    return pd.DataFrame({
        "prompt": prompts,
        "colour": [viz.prompt_color(i) for i in range(len(prompts))],
        unit: [int(m.sum()) for m in masks],
        f"% of {of}": [round(100 * float(m.mean()), 3) for m in masks],
    })


INTRO = """# BoltzFormer: segment small objects from a text prompt
Upload a PNG/JPG/TIFF image, a DICOM slice or a NIfTI volume, type one prompt per line
(e.g. *nodule in lung CT*) and press **Segment**. The image is encoded once; new prompts reuse
it. Each prompt's mask has its own colour; the sampling panels show which image tokens the
decoder's first query attended to, layer by layer (the paper's Fig. 4)."""


def build_app(
    model: BoltzFormer, *, work_dir: Path, examples: list[list[str]] | None = None,
    seed: int = 0, limits: Limits | None = None, cache: EncodingCache | None = None,
    title: str = "BoltzFormer", min_score: float = 0.0,
    existence_threshold: float | None = None, window_size: int | None = None,
    window_overlap: float | None = None,
) -> gr.Blocks:
    """The page and its API around `model` (moved nowhere; eval mode). `work_dir` holds the
    sessions' files; `examples` are [file, prompts] rows (see `make_examples`); `cache` holds
    the sessions' encodings (default: `EncodingCache()`); `min_score` is the page's minimum
    mask score at first (an answer whose mask score is below it: "not found"), which each
    request may change (the "minimum mask score" slider; `/segment`'s and `/export`'s last,
    optional argument); `existence_threshold` is every session's (the existence head's
    probability below which an answer is "not found"; None: the model's config's);
    `window_size` and `window_overlap` override the model's sliding windows (None: its
    config's; `Predictor`'s options)."""
    cache = EncodingCache() if cache is None else cache  # (an empty cache is falsy)
    handlers = _Handlers(model, seed, limits or Limits(), work_dir, cache, min_score,
                         model_existence_threshold(model, existence_threshold),
                         {"window_size": window_size, "window_overlap": window_overlap})
    # one request on the CPU at once
    queue: dict[str, Any] = {"concurrency_limit": 1, "concurrency_id": "model"}
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        # the session's small state (its key, its files): the encodings live in the cache
        session = gr.State(None, time_to_live=3 * 3600, delete_callback=handlers.end_session)
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                file = gr.File(label="image, DICOM slice or NIfTI volume", elem_id="upload")
                window = gr.Dropdown([AUTO_WINDOW, *WINDOWS], value=AUTO_WINDOW,
                                     allow_custom_value=True, visible=False,
                                     label="CT window (a preset or WIDTH,LEVEL)")
                axis = gr.Radio([0, 1, 2], value=2, label="slice along axis", visible=False)
                index = gr.Slider(0, 1, value=0, step=1, label="slice", visible=False)
                preview = gr.Image(label="input", type="numpy", format="png",
                                   interactive=False, height=300)
            with gr.Column(scale=1):
                prompts = gr.Textbox(label="prompts, one per line", lines=4, elem_id="prompts",
                                     placeholder="nodule in lung CT\nleft lung in lung CT")
                samples = gr.Slider(1, MAX_SAMPLES, value=1, step=1, label="sampling draws "
                                    "(more than 1 adds the uncertainty map)")
                threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="mask threshold")
                gate = gr.Slider(
                    0, 1, value=min_score, step=0.05, elem_id="min_score",
                    label="minimum mask score (0 keeps every mask; higher: fewer false alarms, "
                          "more \"not found\")")
                run = gr.Button("Segment", variant="primary", elem_id="segment")
                export = gr.Button(EXPORT_NIFTI, visible=False)
                status = gr.Markdown("Upload an image, a DICOM slice or a volume.",
                                     elem_id="status")
        if examples:
            gr.Examples(examples, inputs=[file, prompts], label="phantom examples")
        with gr.Row():
            overlay = gr.Image(label="masks", format="png", interactive=False, elem_id="overlay")
            probability = gr.Image(label="probability", format="png", interactive=False,
                                   elem_id="probability")
        with gr.Row():
            areas = gr.Dataframe(headers=list(AREA_COLUMNS), label="object size",
                                 interactive=False, elem_id="areas")
            downloads = gr.File(label="masks to download", file_count="multiple",
                                interactive=False, height=140, elem_id="downloads")
        sampling = gr.Image(label="Boltzmann sampling per decoder layer, one figure per prompt",
                            format="png", interactive=False, elem_id="sampling")
        uncertainty = gr.Image(label="uncertainty over the sampling draws, one figure per prompt",
                               format="png", interactive=False, visible=False,
                               elem_id="uncertainty")

        results = [overlay, probability, sampling, uncertainty, areas, downloads, status]
        seg_inputs = [session, prompts, samples, threshold, gate]
        loaded = [session, preview, index, window, axis, export, status]
        refresh: dict[str, Any] = {"fn": handlers.refresh, "inputs": seg_inputs, "outputs": results,
                   "api_visibility": "private", **queue}
        for n, event in enumerate((file.change, window.input, axis.input)):
            visibility = "public" if n == 0 else "private"  # one /load in the API
            event(handlers.load, [session, file, window, axis], loaded, api_name="load",
                  api_visibility=visibility, **queue).success(**refresh)
        index.release(handlers.show_slice, [session, index], [preview, status],
                      api_name="slice", **queue).success(**refresh)
        run.click(handlers.segment, seg_inputs, results, api_name="segment", **queue)
        prompts.submit(handlers.segment, seg_inputs, results, api_visibility="private", **queue)
        export.click(handlers.export, seg_inputs, [areas, downloads, status], api_name="export",
                     **queue)
    return app


class QuietDisconnects:
    """ASGI middleware: a client that goes away mid-request (an upload cut off, a closed tab)
    is one line in the server's log, not an "Exception in ASGI application" traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            log.warning("the client went away during %s %s", scope.get("method"),
                        scope.get("path"))


def launch(
    app: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, work_dir: Path,
    max_file_size_mb: int = 1024, block: bool = True, quiet: bool = False,
    auth: list[tuple[str, str]] | None = None, queue_size: int = QUEUE_SIZE,
    ssl: tuple[Path, Path] | None = None,
) -> None:
    """Serve `app` offline: no share link, no analytics, no monitoring page, system fonts (no
    web fonts fetched), client-side rendering, the sessions' files under `work_dir` only.
    With `auth` ((user, password) pairs) the page, its files and the API need a login. At
    most `queue_size` requests wait for the model (one runs at a time); more are refused at
    once (gradio_client: "Queue is full! Please try again."). `ssl`: (certificate file, key
    file), PEM, to serve https."""
    if _GLIBC is not None:  # two heaps for all the server's threads (before they start)
        _GLIBC.mallopt(_M_ARENA_MAX, 2)
    gc.collect()  # what is left now lives as long as the server: `_release_memory` skips it
    gc.freeze()
    app.queue(max_size=queue_size, default_concurrency_limit=1)
    certfile, keyfile = (None, None) if ssl is None else (str(ssl[0]), str(ssl[1]))
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    app.launch(
        server_name=host, server_port=port, share=False, ssr_mode=False, pwa=False,
        mcp_server=False, run_history=False, footer_links=["api", "settings"], theme=theme,
        max_file_size=max_file_size_mb * 1024 * 1024, allowed_paths=[str(work_dir)],
        prevent_thread_lock=not block, quiet=quiet, show_error=False, enable_monitoring=False,
        auth=auth or None, auth_message="BoltzFormer: log in with the account you were given.",
        state_session_capacity=STATE_SESSIONS,
        app_kwargs={"middleware": [Middleware(QuietDisconnects)]},
        ssl_certfile=certfile, ssl_keyfile=keyfile,
        # gradio's start-up request to itself here: a self-signed certificate must pass it
        ssl_verify=ssl is None,
    )
