"""`boltzformer serve`: the web app (Gradio) on a local port, fully offline (the work:
`apps/web_serve.py`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from boltzformer.apps.web_serve import AUTH_ENV, ServeOptions, serve
from boltzformer.apps.web_sessions import (
    CACHE_MB,
    CACHED_SESSIONS,
    DEFAULT_MAX_VOXELS,
    QUEUE_SIZE,
    TIME_LIMIT,
)
from boltzformer.commands._inference import (
    add_dtype,
    add_existence_threshold,
    add_windows,
    load_predictor,
)
from boltzformer.train.run_dir import DEMO_RUN, resolve_checkpoint

EPILOG = """\
examples:
  boltzformer serve                                   # the model `make demo` trained
  boltzformer serve --checkpoint runs/tiny --port 8080    # a run folder: its best/
  boltzformer serve --checkpoint ckpt/ --host 0.0.0.0 --auth-file logins.txt   # on the LAN
  BOLTZFORMER_AUTH=ana:s3cret boltzformer serve --host 0.0.0.0 --device cuda
  boltzformer serve --host 0.0.0.0 --auth-file logins.txt --ssl-certfile c.pem --ssl-keyfile k.pem

Login: on this machine only (--host 127.0.0.1, the default) there is none unless one is
given. Any other --host (reachable from the network) needs one: --auth-file FILE, lines of
user:password (blank lines and # comments skipped), or BOLTZFORMER_AUTH=user:password in the
environment; or --no-auth to serve scans to anyone who can reach the port. Passwords never go
on the command line. The page asks for the login; gradio_client passes it as
Client(url, auth=(user, password)). Over http the login (and every scan) travels in clear:
on a network, give --ssl-certfile and --ssl-keyfile to serve https (a self-signed
certificate: openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=HOST
-keyout key.pem -out cert.pem; browsers then ask to trust it, and gradio_client needs
Client(url, ssl_verify=False)).

Load: one request runs on the model at a time; at most --queue-size wait (more are refused
at once: "Queue is full! Please try again."), and a request that runs past --time-limit
seconds is stopped at its next stage with a one-line "busy" message.

Memory: each session's loaded scan and its encoding stay in memory for its next prompts, for
the --cached-sessions most recently used sessions and --cache-mb in all; an older session is
told to load its image again.

The page: upload a PNG/JPG/TIFF image, a DICOM slice or a NIfTI volume (a slice slider and
the CT window presets appear for volumes and DICOM), type one prompt per line, press Segment.
It shows each prompt's mask in its own colour, the probability maps, the Boltzmann sampling
of every decoder layer (the paper's Fig. 4), the uncertainty map when sampling draws > 1, the
objects' areas, and mask downloads (PNG; NIfTI with the input's affine for volumes, a DICOM
SEG over the slice for DICOM, from the export button). Phantom examples are one click away.
Nothing is fetched from the network: no analytics, no share link, no web fonts. Needs the web
extra: pip install -e '.[web]'.
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
        help="checkpoint folder (config.json + model.safetensors), training run folder (its "
        "best/, else last/, else its newest snapshot) or Hugging Face Hub id (org/name); "
        f"default: the run `make demo` trained, "
        f"{DEMO_RUN}",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; "
                        "0.0.0.0: the network, which needs a login or --no-auth)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the Boltzmann sampling draws (default 0)")
    parser.add_argument("--min-score", type=float, default=0.0, metavar="S",
                        help="answer 'not found' when a mask's score, its mean probability "
                        "where it paints, is below S (default 0: off); where the page's "
                        "'minimum mask score' slider starts")
    add_existence_threshold(parser)
    add_dtype(parser)
    add_windows(parser)
    parser.add_argument("--max-file-size", type=int, default=1024, metavar="MB",
                        help="largest upload accepted, in MB (default 1024)")
    parser.add_argument("--max-voxels", type=int, default=DEFAULT_MAX_VOXELS, metavar="N",
                        help="largest NIfTI volume read, in voxels (default 2**28); an export's "
                        "prompts x voxels are held to it too")
    parser.add_argument("--cached-sessions", type=int, default=CACHED_SESSIONS, metavar="N",
                        help="keep the loaded scan and encoding of the N most recently used "
                        f"sessions (default {CACHED_SESSIONS})")
    parser.add_argument("--cache-mb", type=int, default=CACHE_MB, metavar="MB",
                        help="and at most MB megabytes of them in all (default "
                        f"{CACHE_MB}); a scan that needs more alone is refused")
    parser.add_argument("--queue-size", type=int, default=QUEUE_SIZE, metavar="N",
                        help="requests waiting for the model at most; more are refused with "
                        f"\"busy, try again\" (default {QUEUE_SIZE})")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT, metavar="S",
                        help="seconds a request may run; it is stopped at its next stage after "
                        f"that, with a one-line message (default {TIME_LIMIT:g})")
    parser.add_argument("--ssl-certfile", type=Path, metavar="PEM",
                        help="certificate to serve https (with --ssl-keyfile)")
    parser.add_argument("--ssl-keyfile", type=Path, metavar="PEM",
                        help="its private key, unencrypted")
    parser.add_argument("--auth-file", type=Path, metavar="FILE",
                        help="logins, one user:password per line; the page and the API need "
                        f"one (default: ${AUTH_ENV}, else none)")
    parser.add_argument("--no-auth", action="store_true",
                        help="serve a --host beyond this machine without a login")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = ServeOptions(
        checkpoint=resolve_checkpoint(args.checkpoint), host=args.host, port=args.port,
        max_file_size=args.max_file_size, max_voxels=args.max_voxels,
        cached_sessions=args.cached_sessions, cache_mb=args.cache_mb,
        queue_size=args.queue_size, time_limit=args.time_limit,
        ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
        auth_file=args.auth_file, no_auth=args.no_auth,
    )
    return serve(load_predictor(options.checkpoint, args), options)
