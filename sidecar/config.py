"""Configuration: loaded once, validated into typed objects, every problem reported.

A config that is wrong in three places says so three times, each with its
YAML path, so an operator fixes it in one pass. Secrets (bearer tokens) come
from a file or an environment variable, never from the YAML itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from sidecar.config_input import (
    UnreadableConfig,
    read_yaml,
    yaml_path,
)
from sidecar.config_input import (
    parse_duration as parse_duration,  # re-exported: callers read it here
)
from sidecar.config_sections import (  # re-exported: callers read them here
    ACCOUNT_ID_PATTERN as ACCOUNT_ID_PATTERN,
)
from sidecar.config_sections import (
    AccountConfig,
    AuthConfig,
    ConnectionsConfig,
    Duration,
    HttpConfig,
    LeasesConfig,
    RepairConfig,
    SendConfig,
    StoreConfig,
    TimeZone,
    VerdictConfig,
    _Strict,
)
from sidecar.config_sections import (
    RateLimitConfig as RateLimitConfig,
)
from sidecar.domain.account import AccountSettings, ProbeSettings


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class Config(_Strict):
    http: HttpConfig = Field(default_factory=HttpConfig)
    state_dir: Path = Path("./data")
    store: StoreConfig = Field(default_factory=StoreConfig)
    auth: AuthConfig | None = None
    repair: RepairConfig = Field(default_factory=RepairConfig)
    send: SendConfig = Field(default_factory=SendConfig)
    verdict: VerdictConfig = Field(default_factory=VerdictConfig)
    leases: LeasesConfig | None = None
    connections: ConnectionsConfig = Field(default_factory=ConnectionsConfig)
    silence_threshold: Duration = 300.0
    timezone: TimeZone = "UTC"
    accounts: Annotated[list[AccountConfig], Field(min_length=1)]

    @model_validator(mode="after")
    def _leases_need_firestore(self) -> Config:
        if self.leases is not None and self.store.firestore is None:
            raise ValueError("leases need store.firestore.project (leases live in Firestore)")
        return self

    def account_settings(self) -> list[AccountSettings]:
        probes = {
            account.id: ProbeSettings(
                peer=account.probe.peer,
                interval_s=account.probe.interval,
                timeout_s=account.probe.timeout,
                misses=account.probe.misses,
            )
            for account in self.accounts
            if account.probe is not None
        }
        expected = {probe.peer: probe for probe in probes.values()}
        return [
            AccountSettings(
                account_id=account.id,
                silence_threshold_s=account.silence_threshold or self.silence_threshold,
                timezone=account.timezone or self.timezone,
                probe=probes.get(account.id),
                expects_probes=expected.get(account.id),
                delivery_timeout_s=self.send.delivery_timeout,
                source=account.source,
                store_messages=account.stores_messages,
            )
            for account in self.accounts
        ]


class LoadedConfig(BaseModel):
    """A valid config plus the secrets it points at, read once at start-up."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: Config
    tokens: tuple[SecretStr, ...]
    source: str
    postgres_urls: dict[str, SecretStr] = Field(default_factory=dict)
    #: What the config names that could not be read (secrets), when the command needs none.
    unresolved: tuple[str, ...] = ()


def _describe(error: Any) -> str:
    # Drop pydantic's own wrapper names (function-after[...], etc.) from the path.
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (check the spelling; docs/reference.md lists every key)"
    elif error["type"] == "too_short" and loc == ("accounts",):
        message = "at least one account is required"
    elif error["type"] == "missing":
        message = "required key is missing"
    elif error["type"] == "string_pattern_mismatch" and loc and loc[-1] == "id":
        message = (
            f"invalid account id {error['input']!r}: use 1-63 lowercase letters, digits,"
            " '_' or '-', starting with a letter or digit"
        )
    return f"{yaml_path(loc)}: {message}"


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate already-parsed YAML. Raises :class:`ConfigError` with every problem."""
    if data is None:
        raise ConfigError(source, ["the file is empty; at least 'accounts' is required"])
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping of keys, e.g. 'accounts:'"])
    problems = _duplicate_account_ids(data.get("accounts")) + _probe_peers(data.get("accounts"))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors()] + problems
    if problems:
        raise ConfigError(source, problems)
    return config


def _probe_peers(accounts: Any) -> list[str]:
    if not isinstance(accounts, list):
        return []
    ids = [a.get("id") for a in accounts if isinstance(a, dict)]
    ingest = {a.get("id") for a in accounts if isinstance(a, dict) and a.get("source") == "ingest"}
    problems = []
    receivers: dict[str, int] = {}
    for index, account in enumerate(accounts):
        probe = account.get("probe") if isinstance(account, dict) else None
        peer = probe.get("peer") if isinstance(probe, dict) else None
        if not isinstance(peer, str):
            continue
        if peer == account.get("id"):
            problems.append(f"accounts[{index}].probe.peer: an account cannot probe itself")
        elif peer not in ids:
            problems.append(f"accounts[{index}].probe.peer: {peer!r} is not a configured account")
        elif peer in ingest:
            problems.append(
                f"accounts[{index}].probe.peer: {peer!r} is an ingest account: the sidecar"
                " holds no session for it, so it cannot tell its probes"
            )
        elif peer in receivers:
            problems.append(
                f"accounts[{index}].probe.peer: {peer!r} already receives probes from"
                f" accounts[{receivers[peer]}]"
            )
        else:
            receivers[peer] = index
    return problems


def _duplicate_account_ids(accounts: Any) -> list[str]:
    if not isinstance(accounts, list):
        return []
    first_seen: dict[str, int] = {}
    problems = []
    for index, account in enumerate(accounts):
        account_id = account.get("id") if isinstance(account, dict) else None
        if not isinstance(account_id, str):
            continue
        if account_id in first_seen:
            problems.append(
                f"accounts[{index}].id: duplicate account id {account_id!r}"
                f" (first at accounts[{first_seen[account_id]}])"
            )
        else:
            first_seen[account_id] = index
    return problems


def _read_tokens(
    auth: AuthConfig | None, environ: dict[str, str]
) -> tuple[list[SecretStr], list[str], list[str]]:
    """The tokens, the problems of the files named, those of the environment."""
    if auth is None:
        return [], [], []
    tokens: list[str] = []
    problems: list[str] = []
    unset: list[str] = []
    if auth.tokens_file is not None:
        try:
            text = auth.tokens_file.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(
                f"auth.tokens_file: cannot read {str(auth.tokens_file)!r}: {exc.strerror}"
            )
        except UnicodeDecodeError as exc:
            problems.append(
                f"auth.tokens_file: {str(auth.tokens_file)!r} is not UTF-8 text (byte {exc.start})"
            )
        else:
            file_tokens = _token_lines(text)
            if not file_tokens:
                problems.append(f"auth.tokens_file: {str(auth.tokens_file)!r} holds no token")
            tokens += file_tokens
    if auth.tokens_env is not None:
        value = environ.get(auth.tokens_env)
        if not value:
            unset.append(
                f"auth.tokens_env: environment variable {auth.tokens_env} is unset or empty"
            )
        else:
            tokens += _token_lines(value.replace(",", "\n"))
    return [SecretStr(t) for t in tokens], problems, unset


def _token_lines(text: str) -> list[str]:
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def load_config(
    path: str | Path,
    environ: dict[str, str] | None = None,
    *,
    need_environment: bool = True,
    need_files: bool = True,
) -> LoadedConfig:
    """Read, parse and validate the config file and the secrets it names. Without
    ``need_environment`` (a command that serves no API and opens no database with its
    secrets), a secret the environment lacks is listed in ``unresolved`` instead of
    an error; without ``need_files``, a secret file that cannot be read too."""
    source = str(path)
    try:
        data = read_yaml(Path(path))
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the config file: {exc.strerror}"]) from None
    except UnreadableConfig as exc:
        raise ConfigError(source, [exc.problem]) from None
    config = parse_config(data, source)
    env = dict(os.environ) if environ is None else environ
    tokens, problems, unset = _read_tokens(config.auth, env)
    postgres_urls: dict[str, SecretStr] = {}
    for index, account in enumerate(config.accounts):
        if account.postgres_url_env is None:
            continue
        url = env.get(account.postgres_url_env, "")
        if not url.startswith(("postgres://", "postgresql://")):
            unset.append(
                f"accounts[{index}].postgres_url_env: environment variable"
                f" {account.postgres_url_env} must hold a postgres:// URL"
            )
        else:
            postgres_urls[account.id] = SecretStr(url)
    fatal = (problems if need_files else []) + (unset if need_environment else [])
    if fatal:
        raise ConfigError(source, fatal)
    return LoadedConfig(
        config=config,
        tokens=tuple(tokens),
        source=source,
        postgres_urls=postgres_urls,
        unresolved=tuple(p for p in problems + unset if p not in fatal),
    )
