"""``wa-sidecar``: run, check-config, replay, pair, recover-db.

Exit codes: 0 ok, 2 bad config or arguments, 1 anything else (a corrupt spool
or message store among them: the error names the file and the recovery).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from sidecar import __version__
from sidecar.adapters.logline import OneLineFormatter
from sidecar.adapters.sqlite_files import RUNBOOK, CorruptDatabaseError
from sidecar.adapters.state_kind import StateDirTaken, claim
from sidecar.config import ConfigError, LoadedConfig, load_config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

log = logging.getLogger("sidecar")


def _non_negative(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if number < 0 or number != number:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wa-sidecar",
        description="Hold WhatsApp linked-device sessions and make their health visible.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="DEBUG may show more detail about failures; never use it on shared logs",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run every configured account")
    run.add_argument("--config", required=True, type=Path, metavar="FILE")
    run.add_argument("--record", type=Path, metavar="CAPTURE", help="also write live events here")
    run.add_argument(
        "--record-blank-text",
        action="store_true",
        help="empty every text, caption, name and key in recorded messages (classes stay the same)",
    )

    check = commands.add_parser("check-config", help="validate a config file")
    check.add_argument("--config", required=True, type=Path, metavar="FILE")

    pair = commands.add_parser("pair", help="link a WhatsApp device to an account (at a terminal)")
    pair.add_argument("account", metavar="ACCOUNT")
    pair.add_argument("--config", required=True, type=Path, metavar="FILE")
    pair.add_argument(
        "--phone", metavar="NUMBER", help="pair with a code typed on the phone instead of a QR code"
    )
    pair.add_argument(
        "--replace", action="store_true", help="drop the local session and link a new device"
    )
    pair.add_argument("--timeout", type=_non_negative, default=300.0, metavar="SECONDS")

    replay = commands.add_parser("replay", help="run the whole pipeline from a capture file")
    replay.add_argument("capture", type=Path, metavar="CAPTURE")
    replay.add_argument("--config", required=True, type=Path, metavar="FILE")
    replay.add_argument(
        "--speed",
        type=_non_negative,
        default=0.0,
        metavar="FACTOR",
        help="0 (default): as fast as possible; N: N times real time",
    )
    replay.add_argument(
        "--linger",
        type=_non_negative,
        default=0.0,
        metavar="SECONDS",
        help="keep serving HTTP this long after the last record, then exit 0",
    )

    recover = commands.add_parser(
        "recover-db",
        help="replace each corrupt SQLite file under state_dir by its readable rows"
        " (with the sidecar stopped)",
    )
    recover.add_argument("--config", required=True, type=Path, metavar="FILE")
    return parser


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to standard error as it is when a record is logged, not as it was when
    the handler was made (a test, or an embedding program, may swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def _setup_logging(level: str) -> None:
    handler = _StderrHandler()
    # one record, one line: a client's newline cannot forge a record
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(
        level=level,
        handlers=[handler],
        force=True,  # neonize configures the root logger on import; ours wins
    )
    if level != "DEBUG":
        # Library chatter (neonize/whatsmeow) can quote JIDs; keep it out of INFO.
        for noisy in ("neonize", "whatsmeow", "Whatsmeow", "aiohttp.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    # We never send or download media, so neonize's "ffmpeg not found" is noise.
    logging.getLogger("neonize.utils.ffmpeg").setLevel(logging.ERROR)


def _pair(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    from sidecar.adapters.neonize_pairing import PairingError, pair

    try:
        pair(loaded, args.account, phone=args.phone, replace=args.replace, timeout_s=args.timeout)
    except PairingError as exc:
        print(f"wa-sidecar pair: {exc}", file=sys.stderr)
        return exc.exit_code
    return EXIT_OK


def _sidecar_running(loaded: LoadedConfig) -> bool:
    """Whether something answers on the configured HTTP address (a running sidecar)."""
    listen = loaded.config.http.listen
    host = "127.0.0.1" if listen.host in ("0.0.0.0", "") else listen.host  # noqa: S104
    host = "::1" if host == "::" else host
    try:
        socket.create_connection((host, listen.port), timeout=1.0).close()
    except OSError:
        return False
    return True


def _recover_db(loaded: LoadedConfig, config: Path) -> int:
    """Check the sidecar's SQLite files; move each corrupt one aside and put in its place
    a new file holding every row that can still be read. Intact files are not touched."""
    from sidecar.adapters.spool import SCHEMA as SPOOL_SCHEMA
    from sidecar.adapters.spool import Spool
    from sidecar.adapters.sqlite_files import integrity_problem, salvage
    from sidecar.adapters.sqlite_state import SCHEMA as STATE_SCHEMA
    from sidecar.adapters.sqlite_state import SqliteStateStore
    from sidecar.adapters.store_sqlite import SCHEMA as STORE_SCHEMA
    from sidecar.adapters.store_sqlite import SqliteMessageStore

    if _sidecar_running(loaded):
        listen = loaded.config.http.listen
        print(
            f"wa-sidecar recover-db: something answers on {listen.host}:{listen.port}; stop the"
            " sidecar first (its files must not change while they are recovered)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    state_dir = loaded.config.state_dir
    files = (
        (Spool.FILENAME, SPOOL_SCHEMA),
        (SqliteMessageStore.FILENAME, STORE_SCHEMA),
        (SqliteStateStore.FILENAME, STATE_SCHEMA),
    )
    status = EXIT_OK
    for filename, schema in files:
        path = state_dir / filename
        if not path.exists():
            print(f"{path}: absent")
            continue
        try:
            problem = integrity_problem(path)
            if problem is None:
                print(f"{path}: ok")
                continue
            saved = salvage(path, schema)
        except Exception as exc:
            print(f"{path}: cannot recover it: {exc}", file=sys.stderr)
            status = EXIT_FAILURE
            continue
        rows = ", ".join(f"{table} {count}" for table, count in saved.rows.items())
        print(
            f"{path}: corrupt ({' '.join(problem.split())}); moved to {saved.aside.name};"
            f" the new file holds the {saved.total} rows that could be read ({rows})"
        )
    if status == EXIT_OK:
        print(f"done; start the sidecar again (wa-sidecar run --config {config})")
    return status


def _corrupt(command: str, exc: CorruptDatabaseError, config: Path) -> int:
    holds = f"; it holds {exc.holds}" if exc.holds else ""
    log.error(
        "wa-sidecar %s: %s is corrupt (%s)%s, so the sidecar does not start. Stop it, run"
        " `wa-sidecar recover-db --config %s`, and start it again; see %s",
        command,
        exc.path,
        exc.detail,
        holds,
        config,
        RUNBOOK,
    )
    return EXIT_FAILURE


#: Commands that serve the API (and need its tokens and the stores' secrets).
SERVING = frozenset({"run", "replay"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 on --help
        return int(exc.code or 0)
    _setup_logging(args.log_level)
    try:
        # pair and recover-db need no secret: they serve no API; check-config checks the
        # files the config names, and only notes what this shell's environment lacks
        loaded = load_config(
            args.config,
            need_environment=args.command in SERVING,
            need_files=args.command in SERVING or args.command == "check-config",
        )
    except ConfigError as exc:
        print(f"{exc.source}: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "check-config":
        accounts = len(loaded.config.accounts)
        print(f"{args.config}: OK ({accounts} account{'s' if accounts != 1 else ''})")
        for problem in loaded.unresolved:
            print(f"  note: {problem} here; `run` and `replay` need it", file=sys.stderr)
        return EXIT_OK
    if args.command == "replay" and not args.capture.is_file():
        print(f"wa-sidecar replay: no such capture file: {args.capture}", file=sys.stderr)
        return EXIT_USAGE
    if args.command in ("run", "replay", "pair"):
        try:  # a replay's state never where a live run reads it, nor the other way round
            claim(loaded.config.state_dir, "replay" if args.command == "replay" else "live")
        except StateDirTaken as exc:
            print(f"wa-sidecar {args.command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.command == "pair":
        return _pair(loaded, args)
    if args.command == "recover-db":
        return _recover_db(loaded, args.config)
    try:
        if args.command == "replay":
            from sidecar.app import replay

            asyncio.run(replay(loaded, args.capture, args.speed, args.linger))
        else:
            from sidecar.app import run

            asyncio.run(run(loaded, args.record, blank_record_text=args.record_blank_text))
    except KeyboardInterrupt:
        return EXIT_OK
    except CorruptDatabaseError as exc:
        return _corrupt(args.command, exc, args.config)
    except Exception as exc:
        log.error("wa-sidecar %s failed: %s", args.command, exc)
        log.debug("failure detail", exc_info=exc)
        return EXIT_FAILURE
    return EXIT_OK
