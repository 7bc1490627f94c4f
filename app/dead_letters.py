"""The ``iotpipe dlq`` command: list dead letters by reason, replay selected ones.

Reasons and ids come from records anyone could have written, so they are printed escaped
(control, format and line-separator characters as ``\\x1b``, ``\\u202e``) and cut short.
"""

from __future__ import annotations

import argparse
import json
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime

from iotpipe.cli import add_command
from iotpipe.config import Config
from iotpipe.dead_letters import (
    MAX_REPLAYS,
    Replayed,
    Summary,
    iso,
    read_dead_letters,
    replay,
    select,
    sources,
    summarize,
)
from iotpipe.wire import cut

REASON_CHARS = 100
NAME_CHARS = 40
ROW = "{:>6} {:>6}  {:<18} {:<16} {:<20} {:<20} {}"  # count, ids, stage, origin, first, last, reason
DEFAULT_LIMIT = 20  # reasons listed; a hostile producer can make every reason different


def register(commands) -> None:
    """Add ``dlq list`` and ``dlq replay`` to the ``iotpipe`` parser."""
    dlq = add_command(
        commands, "dlq", lambda config, args: args.dlq_command(config, args), "list and replay dead letters"
    )
    actions = dlq.add_subparsers(title="actions", required=True, metavar="ACTION")

    listing = action(actions, "list", cmd_list, "dead letters grouped by reason, most frequent first, then totals")
    listing.add_argument("--since", type=since, metavar="ISO_TIME", help="only those dead-lettered then or later")
    listing.add_argument(
        "--limit", type=positive, default=DEFAULT_LIMIT, metavar="N", help="reasons shown (default %(default)s)"
    )
    listing.add_argument("--json", action="store_true", help="print JSON (whole reasons) instead of a table")

    replaying = action(
        actions,
        "replay",
        cmd_replay,
        "send selected dead letters back to their origin topic, each id's latest only, "
        f"unless it was replayed {MAX_REPLAYS} times already",
    )
    which = replaying.add_mutually_exclusive_group(required=True)
    which.add_argument("--reason", metavar="SUBSTRING", help="those whose reason contains this (any case)")
    which.add_argument("--id", dest="ids", nargs="+", metavar="CE_ID", help="those with these CloudEvents ids")
    which.add_argument("--stage", metavar="STAGE", help="those dead-lettered at this stage, e.g. bridge:inference")
    which.add_argument("--all", action="store_true", help="every dead letter")
    replaying.add_argument("--dry-run", action="store_true", help="print what would be replayed; send nothing")


def action(actions, name: str, handler, help: str) -> argparse.ArgumentParser:
    sub = actions.add_parser(name, help=help, description=help)
    sub.set_defaults(dlq_command=handler)
    sub.add_argument(
        "--topic", dest="topics", action="append", metavar="TOPIC", help="read only this topic (repeatable)"
    )
    return sub


def since(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO time such as 2026-05-01T12:00:00Z") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def positive(text: str) -> int:
    if not text.isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def cmd_list(config: Config, args) -> None:
    summary = summarize(read_dead_letters(config, args.topics or list(sources(config))), since=args.since)
    if args.json:
        print(json.dumps(summary.to_json(args.limit), indent=2))
    else:
        print("\n".join(table(summary, args.limit)))


def cmd_replay(config: Config, args) -> int:
    dead_letters = read_dead_letters(config, args.topics or list(sources(config)))
    chosen = select(dead_letters, reason=args.reason, ids=args.ids, stage=args.stage)
    results = replay(config, chosen, dry_run=args.dry_run)
    missing = sorted(set(args.ids or ()) - {result.dead_letter.id for result in results})
    print("\n".join(report(results, missing, args.dry_run)))
    return 2 if missing or any(result.refusal for result in results) else 0


def printable(text: str, limit: int) -> str:
    """``text`` safe for a terminal: control, format and line-separator characters escaped, cut to ``limit``."""
    return cut("".join(_escaped(character) for character in text[: limit + 1]), limit)


def _escaped(character: str) -> str:
    category = unicodedata.category(character)
    unsafe = category[0] == "C" or category in ("Zl", "Zp")  # control, format, unassigned; line breaks
    return character.encode("unicode_escape", "backslashreplace").decode() if unsafe else character


def table(summary: Summary, limit: int) -> Iterator[str]:
    """One row per reason (the ``limit`` most frequent), its example ids below it, then totals."""
    if not summary.groups:
        yield "no dead letters"
        return
    yield ROW.format("count", "ids", "stage", "origin", "first", "last", "reason")
    for group in summary.groups[:limit]:
        stages = printable(",".join(group.stages) or "-", NAME_CHARS)
        origins = printable(",".join(group.origin_topics) or "-", NAME_CHARS)
        reason = printable(group.reason, REASON_CHARS)
        yield ROW.format(group.count, len(group.ids), stages, origins, iso(group.first), iso(group.last), reason)
        if group.examples:
            yield f"{'':15}e.g. {', '.join(printable(name, NAME_CHARS) for name in group.examples)}"
    hidden = len(summary.groups) - limit
    topics = ", ".join(f"{printable(topic, NAME_CHARS)} {count}" for topic, count in summary.per_topic.items())
    yield f"total: {summary.total} dead letters ({topics}), {len(summary.groups)} reasons"
    if hidden > 0:
        yield f"{hidden} less frequent reasons not shown (--limit)"


def report(results: list[Replayed], missing: list[str], dry_run: bool) -> Iterator[str]:
    """What was replayed where, what was refused and why, and which ids were not found."""
    sent = [result for result in results if result.refusal is None]
    refused = [result for result in results if result.refusal is not None]
    yield f"{'would replay' if dry_run else 'replayed'} {len(sent)} of {len(results)} selected dead letters"
    for result in sent:
        dead_letter = result.dead_letter
        yield (
            f"  {printable(dead_letter.name, NAME_CHARS)} -> {result.topic} as replay {dead_letter.replays + 1}"
            f" of {MAX_REPLAYS} (was: {printable(dead_letter.reason, REASON_CHARS)})"
        )
    if refused:
        yield f"refused {len(refused)}:"
    for result in refused:
        yield f"  {printable(result.dead_letter.name, NAME_CHARS)}: {printable(result.refusal or '', REASON_CHARS)}"
    if missing:
        yield f"no dead letter has the id(s): {', '.join(printable(name, NAME_CHARS) for name in missing)}"
