"""Command line: `dicomweb serve`, `dimse`, `send`, `import`, `sample` and `viewer install`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from dicomweb import __version__
from dicomweb.auth import commands as security_commands
from dicomweb.config import Config, ConfigError
from dicomweb.dimse.peers import PeerError, check_aet, parse_allowed, parse_peer, parse_peers
from dicomweb.errors import InvalidUID
from dicomweb.index import Index
from dicomweb.ingest import Ingestor, StoreOutcome
from dicomweb.sample import SYNTAXES as SAMPLE_SYNTAXES
from dicomweb.storage import FilesystemBlobStore

if TYPE_CHECKING:
    from starlette.applications import Starlette

log = logging.getLogger("dicomweb")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", help="data directory: index and files (DICOMWEB_DATA_DIR; ./dicomweb-data)"
    )
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL of the index, e.g. postgresql+asyncpg://host/db "
        "(DICOMWEB_DATABASE_URL; SQLite in the data directory)",
    )


def _dimse(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (DICOMWEB_HOST; 127.0.0.1)")
    parser.add_argument(
        "--dimse-port", type=int, help="DIMSE port, 0 disables (DICOMWEB_DIMSE_PORT; 11112)"
    )
    parser.add_argument("--aet", help="DIMSE AE title (DICOMWEB_AET; DICOMWEB)")
    parser.add_argument(
        "--dimse-peer",
        dest="dimse_peers",
        action="append",
        metavar="AET=HOST:PORT",
        help="a C-MOVE destination; repeatable (DICOMWEB_DIMSE_PEERS, comma-separated)",
    )
    parser.add_argument(
        "--dimse-allow",
        action="append",
        metavar="AET[@HOST]",
        help="a calling AE title allowed to associate; repeatable (DICOMWEB_DIMSE_ALLOW); "
        "without any, every AE title is allowed from the loopback interface only",
    )
    parser.add_argument("--log-level", default="info", help="log level (info)")


def _store_syntax(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store-transfer-syntax",
        metavar="UID",
        help="store new instances in this lossless transfer syntax, e.g. "
        "1.2.840.10008.1.2.4.201 for HTJ2K (DICOMWEB_STORE_TRANSFER_SYNTAX; as received)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomweb", description="A DICOMweb server")
    parser.add_argument("--version", action="version", version=f"dicomweb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server (HTTP and DIMSE)")
    _common(serve)
    _dimse(serve)
    serve.add_argument("--port", type=int, help="HTTP port (DICOMWEB_PORT; 8080)")
    serve.add_argument("--workers", type=int, help="HTTP worker processes (DICOMWEB_WORKERS; 1)")
    serve.add_argument(
        "--dimse-processes",
        type=int,
        help="DIMSE listener processes sharing the DIMSE port (DICOMWEB_DIMSE_PROCESSES; 1)",
    )
    _store_syntax(serve)
    security_commands.add_serve_flags(serve)
    _viewer_dir(serve)

    dimse = commands.add_parser("dimse", help="run the DIMSE listener alone")
    _common(dimse)
    _dimse(dimse)
    # Set by `serve` for the listener processes it starts (see _dimse_processes).
    dimse.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)

    sender = commands.add_parser("send", help="send stored instances to a DICOM AE (C-STORE)")
    _common(sender)
    sender.add_argument("--study", required=True, help="Study Instance UID")
    sender.add_argument("--series", help="only this series")
    sender.add_argument("--instance", help="only this instance")
    sender.add_argument("--to", required=True, metavar="AET@HOST:PORT", help="destination")
    sender.add_argument("--aet", help="calling AE title (DICOMWEB_AET; DICOMWEB)")

    importer = commands.add_parser("import", help="store DICOM files from folders")
    _common(importer)
    importer.add_argument("paths", nargs="+", type=Path, help="files or folders")
    importer.add_argument("--jobs", type=int, default=4, help="files stored at once (4)")
    importer.add_argument("--quiet", action="store_true", help="no progress bar")
    _store_syntax(importer)

    stats = commands.add_parser(
        "stats", help="what the server holds: counts and bytes per modality and per day"
    )
    _common(stats)
    stats.add_argument("--json", action="store_true", help="print JSON (as GET /api/stats)")

    viewer = commands.add_parser("viewer", help="the bundled OHIF viewer")
    viewer_commands = viewer.add_subparsers(dest="viewer_command", required=True)
    install = viewer_commands.add_parser(
        "install", help="download the OHIF viewer build from the npm registry and install it"
    )
    _viewer_dir(install)
    install.add_argument(
        "--tarball", type=Path, help="install from this @ohif/app tarball (npm pack) instead"
    )
    install.add_argument(
        "--registry", default=None, help="npm registry URL (NPM_CONFIG_REGISTRY; npmjs.org)"
    )
    install.add_argument("--force", action="store_true", help="reinstall the same version")

    sample = commands.add_parser(
        "sample", help="write sample CT studies (one per transfer syntax) for `import`"
    )
    sample.add_argument("directory", type=Path, help="folder to write the files into")
    sample.add_argument("--slices", type=int, default=100, help="slices per series (100)")
    sample.add_argument("--size", type=int, default=256, help="rows and columns (256)")
    sample.add_argument(
        "--syntax",
        dest="syntaxes",
        action="append",
        choices=sorted(SAMPLE_SYNTAXES),
        help="only this transfer syntax; repeatable (all: explicit, jpeg2000, htj2k)",
    )
    security_commands.add_commands(commands)
    return parser


def _viewer_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--viewer-dir",
        help="the OHIF viewer's files (DICOMWEB_VIEWER_DIR; viewer_static/ in a checkout, "
        "else ~/.local/share/dicomweb/viewer_static)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dicomweb` console script."""
    args = build_parser().parse_args(argv)
    fields = {f.name for f in dataclasses.fields(Config)}
    flags = {k: _flag(v) for k, v in vars(args).items() if k in fields}
    try:
        config = Config.from_sources(flags)
        check_dimse_settings(config)
    except (ConfigError, PeerError) as exc:
        print(f"dicomweb: {exc}", file=sys.stderr)
        return 2
    if args.command in security_commands.COMMANDS:
        return security_commands.run(config, args)
    if args.command == "serve":
        return serve(config, args.log_level)
    if args.command == "dimse":
        return run_dimse(config, args.log_level, args.ready_fd)
    if args.command == "send":
        return asyncio.run(send_study(config, args.to, args.study, args.series, args.instance))
    if args.command == "viewer":
        return install_viewer(config, args.tarball, args.registry, force=args.force)
    if args.command == "sample":
        return write_sample(args.directory, args.slices, args.size, args.syntaxes)
    if args.command == "stats":
        return asyncio.run(print_stats(config, as_json=args.json))
    return asyncio.run(import_paths(config, args.paths, jobs=args.jobs, quiet=args.quiet))


def _flag(value: object) -> object:
    # Repeatable flags become the comma-separated form of their DICOMWEB_* variable.
    return ",".join(value) if isinstance(value, list) else value


def check_dimse_settings(config: Config) -> None:
    """Refuse malformed peers, allow-list entries or AE titles before starting."""
    check_aet(config.aet)
    if config.dimse_processes < 1:
        raise ConfigError(f"dimse_processes: {config.dimse_processes} is not a valid value")
    parse_peers(config.dimse_peers)
    parse_allowed(config.dimse_allow)


def serve(config: Config, log_level: str) -> int:
    """Run the HTTP server until interrupted."""
    import uvicorn

    from dicomweb.app import create_app, sweep_data_dir

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        # Refuses --auth none off loopback; the protocol bounds slow or huge request heads.
        options = security_commands.server_options(config)
    except ConfigError as exc:
        print(f"dicomweb: {exc}", file=sys.stderr)
        return 2
    # With HTTP worker processes, each builds the app from the environment and runs no
    # DIMSE listener: every listener is a `dicomweb dimse` process. With one HTTP
    # process, the first listener runs in it (the app's lifespan).
    workers = config.workers > 1
    listener_processes = 0
    if config.dimse_port:
        listener_processes = config.dimse_processes if workers else config.dimse_processes - 1
    if workers or listener_processes:
        # Other processes stage files as soon as they start: the sweep runs here, once,
        # before any of them.
        asyncio.run(sweep_data_dir(config))
        config = dataclasses.replace(config, sweep_at_start=False)
    listeners = _dimse_processes(config, listener_processes, log_level)
    if listeners:
        # uvicorn ends a SIGTERM by raising the signal again once it has shut down;
        # with the default action this process would end before it stops them.
        signal.signal(signal.SIGTERM, _exit_on_signal)
    app: str | Starlette
    if workers:
        os.environ.update(dataclasses.replace(config, dimse_port=0).to_environ())
        app = "dicomweb.app:create_app_from_environ"
    else:
        app = create_app(config)
    try:
        uvicorn.run(
            app,
            factory=workers,
            workers=config.workers if workers else None,
            host=config.host,
            port=config.port,
            log_level=log_level,
            timeout_graceful_shutdown=10,
            **options,
        )
    finally:
        _stop(listeners)
    return 0


# How long `serve` waits for its DIMSE listener processes to listen.
_LISTENER_START_SECONDS = 60.0


def _dimse_processes(config: Config, count: int, log_level: str) -> list[subprocess.Popen[bytes]]:
    """Start `count` `dicomweb dimse` processes for `config`; return once each listens
    (or has had a minute to)."""
    if count < 1:
        return []
    environ = dict(os.environ, **config.to_environ())
    command = [sys.executable, "-m", "dicomweb", "dimse", "--log-level", log_level]
    processes, pipes = [], []
    for _ in range(count):
        # Each child writes to its pipe once it listens: the server answers only when
        # every listener takes associations.
        readable, writable = os.pipe()
        ready = [*command, "--ready-fd", str(writable)]
        processes.append(subprocess.Popen(ready, env=environ, pass_fds=(writable,)))
        os.close(writable)
        pipes.append(readable)
    deadline = time.monotonic() + _LISTENER_START_SECONDS
    for readable in pipes:
        ready_now, _, _ = select.select([readable], [], [], max(0.0, deadline - time.monotonic()))
        if not ready_now or not os.read(readable, 1):
            log.warning("a DIMSE listener process did not start listening")
        os.close(readable)
    return processes


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_dimse(config: Config, log_level: str, ready_fd: int | None = None) -> int:
    """Run the DIMSE listener alone until interrupted (SIGINT or SIGTERM); once it
    listens, write a byte to `ready_fd` and close it."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not config.dimse_port:
        print("dicomweb dimse: --dimse-port is 0: nothing to listen on", file=sys.stderr)
        return 2

    async def listen() -> None:
        from dicomweb.dimse import dimse_listener

        config.data_dir.mkdir(parents=True, exist_ok=True)
        index = await Index.open(config.resolved_database_url)
        blobs = FilesystemBlobStore(config.data_dir)
        ingestor = Ingestor(
            blobs,
            index,
            bulk_data_threshold=config.bulk_data_threshold,
            store_transfer_syntax=config.store_transfer_syntax,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            async with dimse_listener(config, ingestor, index, blobs):
                if ready_fd is not None:
                    os.write(ready_fd, b"1")
                    os.close(ready_fd)
                await stop.wait()
        finally:
            await index.close()

    asyncio.run(listen())
    return 0


def install_viewer(
    config: Config, tarball: Path | None, registry: str | None, *, force: bool
) -> int:
    """`dicomweb viewer install`: put the pinned OHIF build where `serve` finds it."""
    from dicomweb import viewer_install

    registry = registry or os.environ.get("NPM_CONFIG_REGISTRY") or viewer_install.DEFAULT_REGISTRY
    try:
        report = viewer_install.install_viewer(
            config.resolved_viewer_dir, tarball=tarball, registry=registry, force=force
        )
    except viewer_install.InstallError as exc:
        print(f"dicomweb viewer install: {exc}", file=sys.stderr)
        return 1
    if report is not None:
        mib = 1024 * 1024
        print(
            f"installed {viewer_install.PACKAGE} {report.version} in {report.directory}: "
            f"{report.installed_files} files, {report.installed_bytes / mib:.0f} MiB "
            f"(dist/ has {report.extracted_bytes / mib:.0f} MiB; source maps"
            f"{'' if report.onnx_runtime_kept else ' and the unused ONNX runtime'} left out)"
        )
    return 0


def write_sample(directory: Path, slices: int, size: int, syntaxes: list[str] | None) -> int:
    """`dicomweb sample`: write the sample studies; print what to run next."""
    from tqdm import tqdm

    from dicomweb.sample import write_sample as write

    chosen = syntaxes or list(SAMPLE_SYNTAXES)
    with tqdm(total=slices * len(chosen), unit="file", file=sys.stderr) as progress:
        try:
            files = write(
                directory,
                slices=slices,
                size=size,
                syntaxes=chosen,
                jobs=os.cpu_count() or 1,
                progress=lambda done: progress.update(done - progress.n),
            )
        except ValueError as exc:
            print(f"dicomweb sample: {exc}", file=sys.stderr)
            return 2
    print(f"wrote {len(files)} files ({', '.join(chosen)}); store them with:")
    print(f"  dicomweb import {directory}")
    return 0


async def send_study(
    config: Config, to: str, study: str, series: str | None, instance: str | None
) -> int:
    """`dicomweb send`: C-STORE a study, series or instance; print a line per instance."""
    from dicomweb.dimse.scu import SendError, SendResult, send
    from dicomweb.resources import validate_uid

    try:
        peer = parse_peer(to)
        validate_uid(study, "--study")
        if series is not None:
            validate_uid(series, "--series")
        if instance is not None:
            validate_uid(instance, "--instance")
    except (PeerError, InvalidUID) as exc:
        print(f"dicomweb send: {exc}", file=sys.stderr)
        return 2
    index = await Index.open(config.resolved_database_url)
    try:
        located = await index.list_instances(study, series, instance)
    finally:
        await index.close()
    if not located:
        print("dicomweb send: no stored instance matches", file=sys.stderr)
        return 1
    blobs = FilesystemBlobStore(config.data_dir)

    def report(result: SendResult) -> None:
        status = "no answer" if result.status is None else f"0x{result.status:04X}"
        print(f"{result.sop_instance_uid}: {status} {result.detail}".rstrip(), flush=True)

    try:
        results = await asyncio.to_thread(
            send, peer, config.aet, located, lambda item: blobs.blob_path(item.blob_key), report
        )
    except SendError as exc:
        print(f"dicomweb send: {exc}", file=sys.stderr)
        return 1
    failed = sum(not r.ok for r in results)
    print(f"sent {len(results) - failed}, failed {failed} (of {len(results)} to {peer})")
    return 1 if failed else 0


async def print_stats(config: Config, *, as_json: bool) -> int:
    """Print what the index holds, in all, per modality and per day of receipt."""
    index = await Index.open(config.resolved_database_url)
    try:
        stats = await index.stats()
    finally:
        await index.close()
    if as_json:
        print(orjson.dumps(stats.to_json(), option=orjson.OPT_INDENT_2).decode())
        return 0
    t = stats.totals
    print(
        f"{t.patients} patients, {t.studies} studies, {t.series} series, "
        f"{t.instances} instances, {_size(t.bytes)}"
    )
    if stats.modalities:
        print(f"\n{'modality':<10}{'studies':>10}{'series':>10}{'instances':>12}{'size':>12}")
        for m in stats.modalities:
            name = m.modality or "-"
            print(f"{name:<10}{m.studies:>10}{m.series:>10}{m.instances:>12}{_size(m.bytes):>12}")
    if stats.days:
        print(f"\n{'received':<12}{'instances':>12}{'size':>12}")
        for d in stats.days:
            print(f"{d.day:<12}{d.instances:>12}{_size(d.bytes):>12}")
    return 0


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _walk(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for directory, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(directory) / name
        else:
            yield path


async def import_paths(
    config: Config, paths: Sequence[Path], *, jobs: int = 4, quiet: bool = False
) -> int:
    """Store every file below `paths` through the ingest path; print a summary.

    Returns 0 when nothing failed, 1 otherwise.
    """
    from tqdm import tqdm

    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"dicomweb import: no such file or folder: {missing[0]}", file=sys.stderr)
        return 2
    files = list(_walk(paths))
    config.data_dir.mkdir(parents=True, exist_ok=True)
    index = await Index.open(config.resolved_database_url)
    ingestor = Ingestor(
        FilesystemBlobStore(config.data_dir),
        index,
        bulk_data_threshold=config.bulk_data_threshold,
        store_transfer_syntax=config.store_transfer_syntax,
    )
    counts: Counter[str] = Counter()
    failures: list[tuple[Path, str]] = []
    queue: asyncio.Queue[Path] = asyncio.Queue()
    for file in files:
        queue.put_nowait(file)
    progress = tqdm(total=len(files), unit="file", disable=quiet, file=sys.stderr)

    async def worker() -> None:
        while not queue.empty():
            path = queue.get_nowait()
            try:
                outcome = await ingestor.store_file(path)
            except OSError as exc:
                outcome = None
                failures.append((path, f"cannot read: {exc.strerror}"))
                counts["failed"] += 1
            if outcome is not None:
                _count(outcome, path, counts, failures)
            progress.update(1)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, jobs))))
    finally:
        progress.close()
        await index.close()
    print(
        f"stored {counts['stored']}, duplicates {counts['duplicates']}, "
        f"failed {counts['failed']} (of {len(files)} files)"
    )
    for path, reason in sorted(failures)[:50]:
        print(f"  failed: {path}: {reason}")
    if len(failures) > 50:
        print(f"  ... and {len(failures) - 50} more")
    return 1 if failures else 0


def _count(
    outcome: StoreOutcome, path: Path, counts: Counter[str], failures: list[tuple[Path, str]]
) -> None:
    if not outcome.stored:
        counts["failed"] += 1
        failures.append((path, f"{outcome.detail} (0x{int(outcome.status):04X})"))
    elif outcome.duplicate:
        counts["duplicates"] += 1
    else:
        counts["stored"] += 1


if __name__ == "__main__":
    sys.exit(main())
