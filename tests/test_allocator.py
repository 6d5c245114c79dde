"""retain_freed_memory: large freed blocks stay in the heap (glibc), checked with mallinfo2.

Each check runs in a fresh interpreter, since the setting is process-wide and cannot be
undone exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import spectral
from spectral import allocator


def _has_mallinfo2() -> bool:
    libc = allocator._glibc()
    return libc is not None and hasattr(libc, "mallinfo2")


glibc_only = pytest.mark.skipif(not _has_mallinfo2(), reason="needs GNU libc >= 2.33 (mallinfo2)")

_PROBE = textwrap.dedent(
    """
    import ctypes, json, sys
    import numpy as np
    import spectral

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    calls = json.loads(sys.argv[1])
    accepted = [spectral.retain_freed_memory(*args) for args in calls]
    block = np.ones(8_000_000)          # 64 MB, above glibc's largest dynamic threshold
    alive = libc.mallinfo2()
    del block
    freed = libc.mallinfo2()
    print(json.dumps({"accepted": accepted, "mmapped_alive": alive.hblkhd,
                      "heap_free_after": freed.fordblks}))
    """
)

_BLOCK = 64_000_000


def _probe(calls: list[list[int]]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(calls)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc_only
def test_default_glibc_maps_and_unmaps_large_blocks():
    r = _probe([])
    assert r["mmapped_alive"] >= _BLOCK
    assert r["heap_free_after"] < _BLOCK


@glibc_only
def test_retained_block_comes_from_the_heap_and_stays_there():
    r = _probe([[]])
    assert r["accepted"] == [True]
    assert r["mmapped_alive"] < _BLOCK
    assert r["heap_free_after"] >= _BLOCK


@glibc_only
def test_limit_below_the_block_size_still_maps_it():
    r = _probe([[32 << 20]])
    assert r["accepted"] == [True]
    assert r["mmapped_alive"] >= _BLOCK


@glibc_only
def test_limit_zero_restores_the_defaults():
    r = _probe([[], [0]])
    assert r["accepted"] == [True, True]
    assert r["mmapped_alive"] >= _BLOCK
    assert r["heap_free_after"] < _BLOCK


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"limit": -1}, "limit must be between"),
        ({"limit": 2**31}, "limit must be between"),
        ({"pad": -5}, "pad must be between"),
        ({"limit": 1.5}, "limit must be an integer"),
        ({"limit": True}, "limit must be an integer"),
    ],
)
def test_bad_arguments_are_refused_before_anything_changes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        spectral.retain_freed_memory(**kwargs)


def test_other_platforms_report_false(monkeypatch):
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert spectral.retain_freed_memory() is False


def test_refused_setting_reports_false(monkeypatch):
    class Refusing:
        def mallopt(self, param, value):
            return 0 if param == allocator._M_MMAP_THRESHOLD else 1

    monkeypatch.setattr(allocator, "_glibc", lambda: Refusing())
    assert spectral.retain_freed_memory() is False


def test_all_three_parameters_are_set(monkeypatch):
    seen = []

    class Recording:
        def mallopt(self, param, value):
            seen.append((param, value))
            return 1

    monkeypatch.setattr(allocator, "_glibc", lambda: Recording())
    assert spectral.retain_freed_memory(1 << 28, 1 << 20) is True
    assert sorted(seen) == sorted(
        [
            (allocator._M_MMAP_THRESHOLD, 1 << 28),
            (allocator._M_TRIM_THRESHOLD, 1 << 28),
            (allocator._M_TOP_PAD, 1 << 20),
        ]
    )
