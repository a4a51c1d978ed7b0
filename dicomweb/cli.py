"""Command line: `dicomweb serve` and `dicomweb import`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from dicomweb import __version__
from dicomweb.config import Config, ConfigError
from dicomweb.index import Index
from dicomweb.ingest import Ingestor, StoreOutcome
from dicomweb.storage import FilesystemBlobStore

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomweb", description="A DICOMweb server")
    parser.add_argument("--version", action="version", version=f"dicomweb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    _common(serve)
    serve.add_argument("--host", help="address to listen on (DICOMWEB_HOST; 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (DICOMWEB_PORT; 8080)")
    serve.add_argument(
        "--dimse-port", type=int, help="DIMSE port, 0 disables (DICOMWEB_DIMSE_PORT; 11112)"
    )
    serve.add_argument("--aet", help="DIMSE AE title (DICOMWEB_AET; DICOMWEB)")
    serve.add_argument("--workers", type=int, help="HTTP worker processes (DICOMWEB_WORKERS; 1)")
    serve.add_argument("--log-level", default="info", help="log level (info)")

    importer = commands.add_parser("import", help="store DICOM files from folders")
    _common(importer)
    importer.add_argument("paths", nargs="+", type=Path, help="files or folders")
    importer.add_argument("--jobs", type=int, default=4, help="files stored at once (4)")
    importer.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dicomweb` console script."""
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "paths")}
    try:
        config = Config.from_sources(flags)
    except ConfigError as exc:
        print(f"dicomweb: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve(config, args.log_level)
    return asyncio.run(import_paths(config, args.paths, jobs=args.jobs, quiet=args.quiet))


def serve(config: Config, log_level: str) -> int:
    """Run the HTTP server until interrupted."""
    import uvicorn

    from dicomweb.app import create_app

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if config.workers > 1:
        # Worker processes build the app themselves, from the environment.
        os.environ.update(config.to_environ())
        uvicorn.run(
            "dicomweb.app:create_app_from_environ",
            factory=True,
            workers=config.workers,
            host=config.host,
            port=config.port,
            log_level=log_level,
            timeout_graceful_shutdown=10,
        )
        return 0
    uvicorn.run(
        create_app(config),
        host=config.host,
        port=config.port,
        log_level=log_level,
        timeout_graceful_shutdown=10,
    )
    return 0


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
        FilesystemBlobStore(config.data_dir), index, bulk_data_threshold=config.bulk_data_threshold
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
