"""The times an operator pastes into `restore --to-time` / `--before`: every form psql prints for a
timestamptz, `date -Is`, logs and ISO 8601 are read, in UTC; anything else exits 2 before anything runs."""

from __future__ import annotations

import datetime
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure, parse_when
from ansible_collections.emergency.ops.plugins.module_utils.times import iso_precise
from driver import ROOT

UTC = datetime.UTC
MOMENT = datetime.datetime(2026, 12, 2, 6, 5, 16, 763209, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-02 06:05:16.763209+00",  # psql: select now()
        "2026-12-02 06:05:16.763209+00:00",
        "2026-12-02 06:05:16.763209+0000",
        "2026-12-02T06:05:16.763209+00:00",  # date -Ins style, to the microsecond
        "2026-12-02T06:05:16.763209Z",
        "2026-12-02t06:05:16.763209z",
        "2026-12-02 06:05:16.763209 UTC",
        "2026-12-02 06:05:16.763209UTC",
        "2026-12-02 06:05:16.763209",  # naive means UTC
        "2026-12-02 06:05:16.763209 +00",
        "  2026-12-02 06:05:16.763209+00\n",
        "2026-12-02 07:05:16.763209+01",  # psql with a session time zone east of UTC
        "2026-12-02 01:05:16.763209-05",
        "2026-12-02 11:35:16.763209+05:30",
        "2026-12-02T06:05:16.763209123+00:00",  # nanoseconds: cut to microseconds
    ],
)
def test_psql_log_and_iso_forms_of_one_moment(text):
    assert parse_when(text) == MOMENT
    assert iso_precise(parse_when(text)) == "2026-12-02T06:05:16.763209Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20 10:30", datetime.datetime(2026, 11, 20, 10, 30, tzinfo=UTC)),
        ("2026-11-20T10:30:00Z", datetime.datetime(2026, 11, 20, 10, 30, tzinfo=UTC)),
        ("2026-11-20", datetime.datetime(2026, 11, 20, tzinfo=UTC)),
        ("2026-12-02T06:05:16+00:00", datetime.datetime(2026, 12, 2, 6, 5, 16, tzinfo=UTC)),  # date -Is
        ("2026-12-02 06:05:16.7+00", datetime.datetime(2026, 12, 2, 6, 5, 16, 700000, tzinfo=UTC)),
        ("2026-12-02 06:05:16.76321+00", datetime.datetime(2026, 12, 2, 6, 5, 16, 763210, tzinfo=UTC)),
    ],
)
def test_short_forms(text, expected):
    assert parse_when(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "not a time",
        "yesterday",
        "2026-13-01 00:00",
        "2026-12-02 25:00",
        "2026-12-02 06:05:16+25",
        "2026-12-02 06:05:16+01:00 UTC",  # two different zones
        "1733119516",
        "2026-12-02 06:05:16; rm -rf /",
    ],
)
def test_what_is_not_a_time_is_invalid(text):
    with pytest.raises(Failure) as caught:
        parse_when(text)
    assert caught.value.outcome == "invalid" and "cannot read the time" in str(caught.value)


moments = st.datetimes(
    min_value=datetime.datetime(1970, 1, 2),
    max_value=datetime.datetime(9998, 12, 30),
    timezones=st.just(UTC),
)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: datetime.timedelta(minutes=m))


def psql_offset(offset: datetime.timedelta) -> str:
    """How PostgreSQL prints a UTC offset: +HH, or +HH:MM when the minutes are not zero."""
    total = int(offset.total_seconds() // 60)
    sign = "-" if total < 0 else "+"
    hours, minutes = divmod(abs(total), 60)
    return f"{sign}{hours:02d}" + (f":{minutes:02d}" if minutes else "")


def psql_text(moment: datetime.datetime, offset: datetime.timedelta) -> str:
    """How psql prints a timestamptz: fractional seconds without trailing zeros, none when zero."""
    local = moment.astimezone(datetime.timezone(offset))
    text = local.strftime("%Y-%m-%d %H:%M:%S")
    if local.microsecond:
        text += ("." + f"{local.microsecond:06d}").rstrip("0")
    return text + psql_offset(offset)


@given(moments, offsets)
def test_every_time_psql_prints_reads_back_as_the_same_moment(moment, offset):
    assert parse_when(psql_text(moment, offset)) == moment


def iso_offset(offset: datetime.timedelta, colon: bool) -> str:
    total = int(offset.total_seconds() // 60)
    sign = "-" if total < 0 else "+"
    hours, minutes = divmod(abs(total), 60)
    return f"{sign}{hours:02d}{':' if colon else ''}{minutes:02d}"


@given(moments, offsets, st.sampled_from(["T", " "]), st.sampled_from(["+HHMM", "+HH:MM", "Z", " UTC", ""]))
def test_iso_and_log_forms_read_back_as_the_same_moment(moment, offset, sep, zone):
    with_offset = zone.startswith("+")
    local = moment.astimezone(datetime.timezone(offset)) if with_offset else moment
    text = local.strftime(f"%Y-%m-%d{sep}%H:%M:%S.%f")
    text += iso_offset(offset, ":" in zone) if with_offset else zone
    parsed = parse_when(text)
    assert parsed == moment and parsed.tzinfo == UTC


@given(moments)
def test_the_reported_time_reads_back(moment):
    assert parse_when(iso_precise(moment)) == moment


def driver(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "driver", *args, "--incidents-dir", str(tmp_path / "incidents")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


@pytest.mark.parametrize("flag", ["--to-time", "--before"])
def test_a_bad_time_exits_2_with_one_line_before_anything_runs(tmp_path, flag):
    proc = driver(tmp_path, "restore", flag, "2026-12-02 06:05:16.763209+00 tomorrow", "--yes")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"restore {flag}: cannot read the time" in lines[0], proc.stderr
    assert not (tmp_path / "incidents").exists() or not any((tmp_path / "incidents").rglob("runs/*"))
