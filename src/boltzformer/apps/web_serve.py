"""`boltzformer serve` after parsing: its settings (`ServeOptions`, the login and https
rules) and `serve`, which runs the web app (`apps/web.py`) around a Predictor until Ctrl-C.
Gradio is imported only when serving (the web extra), never by the settings."""

from __future__ import annotations

import ipaddress
import os
import signal
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
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
from boltzformer.inference.predictor import Predictor

#: The environment variable that holds one login, user:password.
AUTH_ENV = "BOLTZFORMER_AUTH"


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


@dataclass(frozen=True)
class ServeOptions:
    """What `serve` serves and how (the `serve` command's options, same names; the seed and
    the score gates are the Predictor's): `checkpoint` (shown in the page's title), where it
    listens, the upload and cache limits, the queue, the time limit, https (`ssl_certfile`
    and `ssl_keyfile`) and the logins (`auth_file`, else $BOLTZFORMER_AUTH, else none;
    `no_auth` on a network host). Checked when made, one-line ValueErrors; `logins` and `tls`
    are what the rules resolve to."""

    checkpoint: Path
    host: str = "127.0.0.1"
    port: int = 7860
    max_file_size: int = 1024
    max_voxels: int = DEFAULT_MAX_VOXELS
    cached_sessions: int = CACHED_SESSIONS
    cache_mb: int = CACHE_MB
    queue_size: int = QUEUE_SIZE
    time_limit: float = TIME_LIMIT
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    auth_file: Path | None = None
    no_auth: bool = False
    logins: list[tuple[str, str]] | None = field(init=False)
    tls: tuple[Path, Path] | None = field(init=False)

    def __post_init__(self) -> None:
        if min(self.max_file_size, self.max_voxels, self.cached_sessions, self.cache_mb,
               self.queue_size) < 1:
            raise ValueError("--max-file-size, --max-voxels, --cached-sessions, --cache-mb and "
                             "--queue-size must be at least 1")
        if not self.time_limit > 0:
            raise ValueError(f"--time-limit must be over 0 seconds, got {self.time_limit}")
        object.__setattr__(self, "tls", resolve_ssl(self.ssl_certfile, self.ssl_keyfile))
        object.__setattr__(self, "logins", resolve_auth(
            self.host, self.auth_file, self.no_auth, dict(os.environ)))


def serve(predictor: Predictor, options: ServeOptions) -> int:
    """Serve the web app around `predictor`'s model (its seed, score gate and existence
    threshold) as `options` say, offline, until Ctrl-C or SIGTERM; 0 when stopped. The
    sessions' files live in a temporary folder deleted at the end."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read by gradio at import and launch
    try:  # imported here: gradio is an optional extra, and --help must not need it
        from boltzformer.apps import web
    except ImportError as err:
        raise RuntimeError(
            f"the web app needs the web extra ({err}): pip install -e '.[web]'"
        ) from None
    auth, tls = options.logins, options.tls
    with tempfile.TemporaryDirectory(prefix="boltzformer-serve-") as tmp:
        work_dir = Path(tmp)
        examples = web.make_examples(work_dir / "examples")
        app = web.build_app(
            predictor.model, work_dir=work_dir, examples=examples, seed=predictor.seed,
            limits=Limits(max_voxels=options.max_voxels, max_seconds=options.time_limit),
            cache=EncodingCache(options.cached_sessions, options.cache_mb * 2**20),
            title=f"BoltzFormer: {options.checkpoint}", min_score=predictor.min_score,
            existence_threshold=predictor.existence_threshold,
            window_size=0 if predictor.windows is None else predictor.windows.size,
            window_overlap=None if predictor.windows is None else predictor.windows.overlap,
        )
        login = f"login required ({len(auth)} account(s))" if auth else "no login"
        scheme = "http" if tls is None else "https"
        print(f"serving {options.checkpoint} at {scheme}://{options.host}:{options.port}, "
              f"{login} (Ctrl-C stops)", flush=True)
        # Ctrl-C (or SIGTERM) sets an event instead of raising KeyboardInterrupt wherever the
        # main thread happens to be (inside gradio's start-up, a KeyboardInterrupt could
        # leave the server running and the process hanging).
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            web.launch(app, host=options.host, port=options.port, work_dir=work_dir,
                       max_file_size_mb=options.max_file_size, block=False, auth=auth,
                       queue_size=options.queue_size, ssl=tls)
            stop.wait()
        finally:
            app.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    print("stopped")
    return 0
