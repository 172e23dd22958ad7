from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.cli import EXIT_OK, EXIT_USAGE, main
from sidecar.config import ConfigError, load_config, parse_duration

FIXTURES = Path(__file__).parent / "fixtures" / "config"
INVALID = sorted((FIXTURES / "invalid").glob("*.yaml"))


def expected_problem(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode()  # the rest may not be UTF-8
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: '"
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_config_exits_2_and_names_the_field(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WA_SIDECAR_TEST_UNSET", raising=False)
    if path.read_text(errors="replace").split("\n")[1].startswith("# environment:"):
        # what the environment lacks: `run` refuses it; check-config, run where the
        # service's environment may not be, says so and passes (the file itself is fine)
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert any(expected_problem(path) in problem for problem in caught.value.problems)
        assert main(["check-config", "--config", str(path)]) == EXIT_OK
        err = capsys.readouterr().err
        assert f"note: {expected_problem(path)}" in err
        return
    assert main(["check-config", "--config", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "invalid configuration" in err
    assert expected_problem(path) in err


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "silence_threshold: soon\n"
        "bogus: 1\n"
        "accounts:\n"
        "  - id: Bad\n"
        "  - id: ok\n"
        "    timezone: Nowhere/Land\n"
        "  - id: ok\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    paths = sorted(problem.split(":")[0] for problem in caught.value.problems)
    assert paths == [
        "accounts[0].id",
        "accounts[1].timezone",
        "accounts[2].id",
        "bogus",
        "silence_threshold",
    ]


def test_minimal_config_gets_the_contract_defaults() -> None:
    config = load_config(FIXTURES / "valid" / "minimal.yaml").config
    assert (config.http.listen.host, config.http.listen.port) == ("127.0.0.1", 9464)
    assert config.state_dir == Path("data")
    assert config.store.backend == "sqlite"
    assert config.auth is None
    [settings] = config.account_settings()
    assert settings.account_id == "sales"
    assert settings.silence_threshold_s == 300.0
    assert settings.timezone == "UTC"


def test_full_config_with_per_account_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURES / "valid" / "full.yaml"
    config = load_config(path).config
    assert (config.http.listen.host, config.http.listen.port) == ("::1", 9555)
    assert config.store.firestore is not None
    assert config.store.firestore.project == "my-project"
    settings = {s.account_id: s for s in config.account_settings()}
    assert settings["sales"].silence_threshold_s == 90.0
    assert settings["sales"].timezone == "Europe/Bucharest"
    assert settings["support_2"].silence_threshold_s == 5400.0
    assert settings["support_2"].timezone == "America/New_York"
    assert settings["0night-shift"].silence_threshold_s == 86400.0
    assert main(["check-config", "--config", str(path)]) == EXIT_OK
    assert "OK (3 accounts)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("1h", 3600),
        ("1d", 86400),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("2.5m", 150),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m5", "5 m", "5x", "-5m", "5m-", 300, None, True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_tokens_from_file_and_environment(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# comment\n\nfile-token\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"auth:\n  tokens_file: {tokens}\n  tokens_env: MY_TOKENS\naccounts:\n  - id: a\n"
    )
    loaded = load_config(config, environ={"MY_TOKENS": "env-one, env-two"})
    assert [t.get_secret_value() for t in loaded.tokens] == ["file-token", "env-one", "env-two"]
    assert "file-token" not in repr(loaded)


def test_empty_tokens_file_is_an_error(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# nothing here\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"auth:\n  tokens_file: {tokens}\naccounts:\n  - id: a\n")
    with pytest.raises(ConfigError, match=r"auth\.tokens_file: .* holds no token"):
        load_config(config)


def test_a_tokens_file_that_is_not_utf8_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_bytes(b"token-\xff\xfe\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"auth:\n  tokens_file: {tokens}\naccounts:\n  - id: a\n")
    assert main(["check-config", "--config", str(config)]) == EXIT_USAGE
    assert f"auth.tokens_file: '{tokens}' is not UTF-8 text (byte 6)" in capsys.readouterr().err


@pytest.mark.parametrize("depth", [33, 900, 5000])
def test_yaml_nested_deeper_than_any_config_is_refused_before_it_is_built(
    tmp_path: Path, depth: int
) -> None:
    """Deep YAML overflowed the YAML reader's recursion (a traceback and exit 1); block
    mappings and flow lists alike are refused with the key they are under."""
    flow = tmp_path / "flow.yaml"
    flow.write_text("accounts:\n  - id: a\nextra: " + "[" * depth + "]" * depth + "\n")
    block = tmp_path / "block.yaml"
    block.write_text(
        "accounts:\n  - id: a\nhttp:\n"
        + "".join("  " * (level + 1) + "k:\n" for level in range(depth))
        + "  " * (depth + 1)
        + "v: 1\n"
    )
    for path, where in ((flow, "extra[0][0]..."), (block, "http.k.k...")):
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert caught.value.problems[0].startswith(f"{where}: nested more than 32 levels deep")


def test_the_deepest_real_config_is_not_too_deep() -> None:
    assert load_config(FIXTURES / "valid" / "full.yaml").config.accounts


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1" * 309 + "s", "is longer than 365 days"),  # float() of it is infinity
        ("9" * 400 + "d", "is longer than 365 days"),
        ("366d", "is longer than 365 days"),
        ("0.9ms", "is shorter than 1ms"),
        ("0." + "0" * 330 + "1s", "must be greater than zero"),
    ],
)
def test_durations_out_of_bounds(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_duration(text)


def test_commands_that_serve_no_api_need_no_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example config reads its tokens from WA_SIDECAR_TOKENS: the commands its
    comments give (check-config, pair, recover-db) work in a shell without it."""
    monkeypatch.delenv("WA_SIDECAR_TOKENS", raising=False)
    example = FIXTURES.parent.parent.parent / "examples" / "config.yaml"
    assert main(["check-config", "--config", str(example)]) == EXIT_OK
    out = capsys.readouterr()
    assert out.out.startswith(f"{example}: OK (2 accounts)")
    assert "note: auth.tokens_env: environment variable WA_SIDECAR_TOKENS is unset" in out.err
    # pair goes as far as the account (an unknown one is refused for that, not the token)
    assert main(["pair", "nobody", "--config", str(example)]) == EXIT_USAGE
    assert "no account 'nobody'" in capsys.readouterr().err
    # run still refuses to serve an API nobody can authenticate to
    with pytest.raises(ConfigError, match="WA_SIDECAR_TOKENS is unset"):
        load_config(example)


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(tmp_path / "absent.yaml")]) == EXIT_USAGE
    assert "cannot read the config file" in capsys.readouterr().err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay"]) == EXIT_USAGE
    assert main(["frobnicate"]) == EXIT_USAGE
    assert main(["replay", "x.jsonl", "--config", "c.yaml", "--speed", "-1"]) == EXIT_USAGE


def test_postgres_session_store_url_comes_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("accounts:\n  - id: a\n    postgres_url_env: A_DB\n  - id: b\n")
    loaded = load_config(config, environ={"A_DB": "postgres://wa:secret@db.internal/wa_a"})
    assert loaded.postgres_urls["a"].get_secret_value() == "postgres://wa:secret@db.internal/wa_a"
    assert "b" not in loaded.postgres_urls
    assert "secret" not in repr(loaded)
    with pytest.raises(
        ConfigError,
        match=r"accounts\[0\]\.postgres_url_env: environment variable A_DB must hold a postgres:// URL",
    ):
        load_config(config, environ={"A_DB": "mysql://x"})
