"""docs/reference.md lists every external name, and the code has exactly those: each
section's table is held against the code's own source of truth, both ways."""

from __future__ import annotations

import argparse
import asyncio
import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ImageMessage
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage
from pydantic import BaseModel, BeforeValidator

from sidecar import cli
from sidecar import testing as build
from sidecar.adapters.capture import MAX_LINE_BYTES, MAX_T, MIN_T, TICK, encode_record
from sidecar.adapters.health_json import health_json
from sidecar.adapters.http.common import API_PREFIX
from sidecar.adapters.http.pages import pairing_view
from sidecar.compose import assemble, build_app, build_repairs
from sidecar.config import Config
from sidecar.core.clock import ReplayClock
from sidecar.core.pipeline import EVENT_CLASSES
from sidecar.core.repair import RecordingControl
from sidecar.domain.classify import classify
from sidecar.domain.delivery import SendResult
from sidecar.domain.own_events import OWN_EVENTS
from sidecar.domain.probes import ProbeSent
from sidecar.domain.records import build_records
from sidecar.metrics.families import ALL

from .support.config import AssemblyFactory, ConfigFactory
from .support.reference import REFERENCE, Reference, backticked, drift, json_paths


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference.read()


def check(reference: Reference, heading: str, code: set[str]) -> None:
    problem = drift(heading, code, reference.names(heading))
    assert problem is None, problem


# -- CLI ------------------------------------------------------------------------------


def _metavar(action: argparse.Action) -> str:
    if isinstance(action.metavar, str):
        return action.metavar
    if action.choices is not None:
        return "{" + ",".join(str(choice) for choice in action.choices) + "}"
    return action.dest.upper()


def cli_names(parser: argparse.ArgumentParser, command: str = "") -> Iterator[str]:
    """``COMMAND`` for each subcommand, ``[COMMAND] OPTION [METAVAR]`` for each argument."""
    prefix = f"{command} " if command else ""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name
                yield from cli_names(sub, name)
            continue
        spelled = " / ".join(action.option_strings)
        if action.nargs == 0:
            yield f"{prefix}{spelled}"
        elif action.option_strings:
            yield f"{prefix}{spelled} {_metavar(action)}"
        else:
            yield f"{prefix}{_metavar(action)}"


def test_cli(reference: Reference) -> None:
    check(reference, "Commands and options", set(cli_names(cli.build_parser())))


def test_exit_codes(reference: Reference) -> None:
    codes = {cli.EXIT_OK, cli.EXIT_FAILURE, cli.EXIT_USAGE}
    check(reference, "Exit codes", {str(code) for code in codes})


# -- Config keys --------------------------------------------------------------------


def _models(annotation: Any, suffix: str = "") -> Iterator[tuple[type[BaseModel], str]]:
    """The models a field's value holds, with ``[]`` for a list of them. A type with a
    BeforeValidator is parsed from a scalar (``http.listen: host:port``): no keys below it."""
    origin = get_origin(annotation)
    if origin is Annotated:
        if not any(isinstance(meta, BeforeValidator) for meta in annotation.__metadata__):
            yield from _models(get_args(annotation)[0], suffix)
    elif origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            yield from _models(arg, suffix)
    elif origin is list:
        yield from _models(get_args(annotation)[0], suffix + "[]")
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, suffix


def config_keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        yield key
        if any(isinstance(meta, BeforeValidator) for meta in field.metadata):
            continue
        for nested, suffix in _models(field.annotation):
            yield from config_keys(nested, f"{key}{suffix}.")


def test_config_keys(reference: Reference) -> None:
    keys = set(config_keys(Config))
    assert {"accounts[].probe.peer", "auth.rate_limit.failures", "http.listen"} <= keys
    check(reference, "Config keys", keys)


# -- HTTP endpoints -------------------------------------------------------------------


def test_http_endpoints(
    reference: Reference, make_config: ConfigFactory, make_assembly: AssemblyFactory
) -> None:
    assembly = make_assembly(make_config())
    app = build_app(assembly, repairs=build_repairs(assembly, RecordingControl()))
    routes = {
        f"{route.method} {route.resource.canonical}"
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    check(reference, "HTTP endpoints", routes)
    wrong = [
        row.name
        for row in reference.rows("HTTP endpoints")
        if row.cells[0] != ("yes" if row.name.split()[1].startswith(API_PREFIX) else "no")
    ]
    assert wrong == [], f"'HTTP endpoints': wrong 'token' column (yes for {API_PREFIX}): {wrong}"


# -- Health object --------------------------------------------------------------------


def test_health_object(
    reference: Reference, make_config: ConfigFactory, clock: ReplayClock
) -> None:
    assembly = assemble(make_config(), clock, storage=True)
    try:
        sidecar = assembly.sidecar
        t0 = clock.now()
        sidecar.handle("sales", build.connected(), t0)
        sidecar.handle("sales", build.offline_sync_completed(), t0 + 1)
        sidecar.handle("sales", build.message_event(build.text("x")), t0 + 10)
        sidecar.handle("sales", build.message_event(build.history_sync_notification()), t0 + 20)
        for at in (t0 + 100, t0 + 400, t0 + 430):  # the evidence, then confirmed
            clock.advance_to(at)
            sidecar.evaluate_verdicts()
        health = health_json(sidecar.health("sales"))
        view = pairing_view(sidecar, "sales")
    finally:
        assert assembly.storage is not None
        asyncio.run(assembly.storage.close())
        assembly.close()
    assert health["verdictHistory"], "no verdict change: its keys would go unchecked"
    assert "store" in health, "no storage: the store's keys would go unchecked"
    check(reference, "Health object", set(json_paths(health)))
    check(reference, "Pairing view", set(json_paths(view)))


# -- Metrics --------------------------------------------------------------------------


def test_metrics(reference: Reference) -> None:
    families = {
        f"{family.name}_total" if family.kind == "counter" else family.name: family
        for family in ALL
    }
    check(reference, "Metrics", set(families))
    wrong = []
    for row in reference.rows("Metrics"):
        family = families[row.name]
        kind, labels, help_text = row.cells
        expected = ("account", *family.labels) if family.per_account else family.labels
        series_noted = family.kind != "histogram" or all(
            f"`{suffix}`" in kind for suffix in ("_bucket", "_sum", "_count")
        )
        if kind.split()[0] != family.kind or not series_noted:
            wrong.append(f"{row.name}: type {kind!r}, the code has {family.kind}")
        if tuple(backticked(labels)) != expected:
            wrong.append(f"{row.name}: labels {labels!r}, the code has {expected}")
        if help_text != family.documentation:
            wrong.append(f"{row.name}: help {help_text!r}, the code has {family.documentation!r}")
    assert wrong == [], "'Metrics': " + "; ".join(wrong)


# -- Capture format -------------------------------------------------------------------


def test_capture_records(reference: Reference) -> None:
    lines = [
        encode_record(1.5, None, None),
        encode_record(2.5, "sales", build.message_event(build.text("x"))),
        encode_record(3.5, "sales", ProbeSent("p1", "support", ok=False, reason="not_connected")),
        encode_record(4.5, "sales", SendResult("3EB0", "12025550123@s.whatsapp.net", ok=True)),
    ]
    fields = {path for line in lines for path in json_paths(json.loads(line))}
    check(reference, "Record fields", fields)
    [t_row] = [row for row in reference.rows("Record fields") if row.name == "t"]
    bounds = [f"`{MIN_T:.0f}`", f"`{MAX_T:.0f}`"]
    assert all(bound in " ".join(t_row.cells) for bound in bounds), (
        f"'Record fields': the row of `t` must give its range {bounds}"
    )


def test_capture_line_bound() -> None:
    text = REFERENCE.read_text(encoding="utf-8").split("## Capture format", 1)[1]
    assert f"`{MAX_LINE_BYTES}` bytes" in text, "the capture section must give the bound"


def test_capture_event_names(reference: Reference) -> None:
    check(reference, "Event names", {*EVENT_CLASSES, TICK, *OWN_EVENTS})


# -- Firestore layout -----------------------------------------------------------------


def test_firestore_documents(reference: Reference) -> None:
    customer = build.jid("12025550123")
    group, member = build.jid("120363000000000001", "g.us"), build.jid("12025550147")
    image = WAMessage(imageMessage=ImageMessage(caption="look", mimetype="image/jpeg"))
    events = [
        build.message_event(build.text("hello"), chat=customer, message_id="M1"),
        build.message_event(build.text("hi"), chat=customer, from_me=True),
        build.message_event(image, chat=group, sender=member, is_group=True),
        build.message_event(build.edit("M1", "12025550123@s.whatsapp.net", "hello!")),
    ]
    message_fields: set[str] = set()
    thread_fields: set[str] = set()
    for event in events:
        records = build_records("sales", event, classify(event.Message))
        assert records is not None
        doc, patch = records
        message_fields |= set(json_paths(doc.fields))
        thread_fields |= set() if patch is None else set(json_paths(patch.fields))
    check(reference, "Thread document", thread_fields)
    check(reference, "Message document", message_fields)


def test_the_check_names_what_drifted(tmp_path: Path) -> None:
    """A reference missing a line, or listing a name the code lacks, fails naming it."""
    text = "## S\n\n| name | meaning |\n|---|---|\n| `a` | kept |\n| `z` | gone |\n"
    (tmp_path / "reference.md").write_text(text)
    names = Reference.read(tmp_path / "reference.md").names("S")
    assert drift("S", {"a", "b"}, names) == (
        "'S': in the code but not in docs/reference.md: ['b'];"
        " in docs/reference.md but not in the code: ['z']"
    )
    assert drift("S", {"a", "z"}, names) is None
