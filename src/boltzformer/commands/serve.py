"""`boltzformer serve`: the web app (Gradio) on a local port, fully offline."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import ssl
import tempfile
import threading
from pathlib import Path

from boltzformer.apps.web_sessions import (
    CACHE_MB,
    CACHED_SESSIONS,
    DEFAULT_MAX_VOXELS,
    QUEUE_SIZE,
    TIME_LIMIT,
    EncodingCache,
    Limits,
)
from boltzformer.commands._inference import add_dtype, add_existence_threshold, load_predictor
from boltzformer.train.run_dir import DEMO_RUN, resolve_checkpoint

#: The environment variable that holds one login, user:password.
AUTH_ENV = "BOLTZFORMER_AUTH"

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


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def parse_logins(text: str, source: str) -> list[tuple[str, str]]:
    """user:password lines (blank lines and # comments skipped) -> (user, password) pairs;
    a one-line error naming `source` and the line number (never the line) if one is not."""
    logins = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user.strip() or not password:
            raise ValueError(f"{source}, line {number}: expected user:password")
        logins.append((user.strip(), password))
    if not logins:
        raise ValueError(f"{source}: no user:password line")
    return logins


def resolve_auth(host: str, auth_file: Path | None, no_auth: bool,
                 environ: dict[str, str]) -> list[tuple[str, str]] | None:
    """The logins to require: from `auth_file`, else $BOLTZFORMER_AUTH, else none; none on a
    non-loopback `host` only with `no_auth`. One-line errors otherwise."""
    from_env = environ.get(AUTH_ENV)
    if no_auth:
        if auth_file is not None or from_env:
            given = "--auth-file" if auth_file is not None else f"${AUTH_ENV}"
            raise ValueError(f"--no-auth and {given} contradict each other: drop one")
        return None
    if auth_file is not None:
        try:
            text = auth_file.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"--auth-file {auth_file}: cannot read it ({err})") from None
        return parse_logins(text, f"--auth-file {auth_file}")
    if from_env:
        return parse_logins(from_env, f"${AUTH_ENV}")
    if not is_loopback(host):
        raise ValueError(
            f"--host {host} serves scans and masks to anyone who can reach the port: give "
            f"logins with --auth-file FILE (lines user:password) or {AUTH_ENV}=user:password, "
            "or pass --no-auth to serve without a login"
        )
    return None


def resolve_ssl(certfile: Path | None, keyfile: Path | None) -> tuple[Path, Path] | None:
    """(certificate, key) to serve https, None for http; one-line errors if only one is
    given, or they are not a PEM certificate and its unencrypted key."""
    if certfile is None and keyfile is None:
        return None
    if certfile is None or keyfile is None:
        raise ValueError("https needs both --ssl-certfile and --ssl-keyfile")
    for option, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if not path.is_file():
            raise ValueError(f"{option} {path}: no such file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as err:
        raise ValueError(f"--ssl-certfile {certfile} --ssl-keyfile {keyfile}: not a PEM "
                         f"certificate and its unencrypted key ({err})") from None
    return certfile, keyfile


def run(args: argparse.Namespace) -> int:
    checkpoint = resolve_checkpoint(args.checkpoint)
    if min(args.max_file_size, args.max_voxels, args.cached_sessions, args.cache_mb,
           args.queue_size) < 1:
        raise ValueError("--max-file-size, --max-voxels, --cached-sessions, --cache-mb and "
                         "--queue-size must be at least 1")
    if not args.time_limit > 0:
        raise ValueError(f"--time-limit must be over 0 seconds, got {args.time_limit}")
    ssl = resolve_ssl(args.ssl_certfile, args.ssl_keyfile)
    auth = resolve_auth(args.host, args.auth_file, args.no_auth, dict(os.environ))
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read by gradio at import and launch
    try:  # imported here: gradio is an optional extra, and --help must not need it
        from boltzformer.apps import web
    except ImportError as err:
        raise RuntimeError(
            f"the web app needs the web extra ({err}): pip install -e '.[web]'"
        ) from None
    predictor = load_predictor(checkpoint, args)
    with tempfile.TemporaryDirectory(prefix="boltzformer-serve-") as tmp:
        work_dir = Path(tmp)
        examples = web.make_examples(work_dir / "examples")
        app = web.build_app(
            predictor.model, work_dir=work_dir, examples=examples, seed=args.seed,
            limits=Limits(max_voxels=args.max_voxels, max_seconds=args.time_limit),
            cache=EncodingCache(args.cached_sessions, args.cache_mb * 2**20),
            title=f"BoltzFormer: {checkpoint}", min_score=args.min_score,
            existence_threshold=args.existence_threshold,
        )
        login = f"login required ({len(auth)} account(s))" if auth else "no login"
        scheme = "http" if ssl is None else "https"
        print(f"serving {checkpoint} at {scheme}://{args.host}:{args.port}, {login} "
              "(Ctrl-C stops)", flush=True)
        # Ctrl-C (or SIGTERM) sets an event instead of raising KeyboardInterrupt wherever the
        # main thread happens to be (inside gradio's start-up, a KeyboardInterrupt could
        # leave the server running and the process hanging).
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            web.launch(app, host=args.host, port=args.port, work_dir=work_dir,
                       max_file_size_mb=args.max_file_size, block=False, auth=auth,
                       queue_size=args.queue_size, ssl=ssl)
            stop.wait()
        finally:
            app.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    print("stopped")
    return 0
