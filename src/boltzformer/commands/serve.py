"""`boltzformer serve`: the web app (Gradio) on a local port, fully offline."""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import threading
from pathlib import Path

from boltzformer.commands._inference import load_predictor

#: Where `make demo` (`boltzformer demo --out demo_output`) leaves its model, best first.
DEMO_CHECKPOINTS = (Path("demo_output/run/best"), Path("demo_output/run/last"))

EPILOG = """\
examples:
  boltzformer serve                                   # the model `make demo` trained
  boltzformer serve --checkpoint runs/tiny/best --port 8080
  boltzformer serve --checkpoint ckpt/ --host 0.0.0.0 --device cuda   # reachable on the LAN

The page: upload a PNG/JPG/TIFF image, a DICOM slice or a NIfTI volume (a slice slider and
the CT window presets appear for volumes and DICOM), type one prompt per line, press Segment.
It shows each prompt's mask in its own colour, the probability maps, the Boltzmann sampling
of every decoder layer (the paper's Fig. 4), the uncertainty map when sampling draws > 1, the
objects' areas, and mask downloads (PNG; NIfTI with the input's affine for volumes). Phantom
examples are one click away. Nothing is fetched from the network: no analytics, no share
link, no web fonts. Needs the web extra: pip install -e '.[web]'.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="the web app: upload a scan, type prompts, see and download the masks",
        description="Serve a web page (Gradio) for segmenting images, DICOM slices and NIfTI\n"
        "volumes from text prompts with a checkpoint. Runs offline on this machine.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint", type=Path, metavar="DIR",
        help="checkpoint folder (config.json + model.safetensors); default: the model "
        f"`make demo` wrote ({DEMO_CHECKPOINTS[0]}, else {DEMO_CHECKPOINTS[1]})",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the Boltzmann sampling draws (default 0)")
    parser.add_argument("--max-file-size", type=int, default=1024, metavar="MB",
                        help="largest upload accepted, in MB (default 1024)")
    parser.add_argument("--max-voxels", type=int, default=2**28, metavar="N",
                        help="largest NIfTI volume read, in voxels (default 2**28); an export's "
                        "prompts x voxels are held to it too")
    parser.set_defaults(run=run)


def resolve_checkpoint(checkpoint: Path | None) -> Path:
    """--checkpoint, else the model `make demo` wrote; a one-line error when there is none."""
    if checkpoint is not None:
        return checkpoint
    for candidate in DEMO_CHECKPOINTS:
        if (candidate / "model.safetensors").is_file():
            return candidate
    raise FileNotFoundError(
        f"no --checkpoint given and no model from `make demo` in {DEMO_CHECKPOINTS[0].parent}/: "
        "run `make demo` (or `boltzformer train`) first, or pass --checkpoint DIR"
    )


def run(args: argparse.Namespace) -> int:
    args.checkpoint = resolve_checkpoint(args.checkpoint)
    if args.max_file_size < 1 or args.max_voxels < 1:
        raise ValueError("--max-file-size and --max-voxels must be at least 1")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read by gradio at import and launch
    try:
        from boltzformer import web
    except ImportError as err:
        raise RuntimeError(
            f"the web app needs the web extra ({err}): pip install -e '.[web]'"
        ) from None
    predictor = load_predictor(args)
    with tempfile.TemporaryDirectory(prefix="boltzformer-serve-") as tmp:
        work_dir = Path(tmp)
        examples = web.make_examples(work_dir / "examples")
        app = web.build_app(
            predictor.model, work_dir=work_dir, examples=examples, seed=args.seed,
            limits=web.Limits(max_voxels=args.max_voxels),
            title=f"BoltzFormer: {args.checkpoint}",
        )
        print(f"serving {args.checkpoint} at http://{args.host}:{args.port} (Ctrl-C stops)",
              flush=True)
        # Ctrl-C (or SIGTERM) sets an event instead of raising KeyboardInterrupt wherever the
        # main thread happens to be (inside gradio's start-up, a KeyboardInterrupt could
        # leave the server running and the process hanging).
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            web.launch(app, host=args.host, port=args.port, work_dir=work_dir,
                       max_file_size_mb=args.max_file_size, block=False)
            stop.wait()
        finally:
            app.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    print("stopped")
    return 0
