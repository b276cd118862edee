"""Ids come from the OS's CSPRNG through a per-process buffer: never the same in two
processes, even when one was forked from the other after drawing some."""

from __future__ import annotations

import os

from bot.domain import ids
from bot.domain.events import new_id


def test_ids_have_their_shapes_and_do_not_repeat() -> None:
    threads = {ids.new_thread_id() for _ in range(5000)}
    assert len(threads) == 5000
    assert all(ids.is_thread_id(t) for t in threads)
    tid = next(iter(threads))
    request = ids.new_request_id(tid)
    assert ids.thread_of_request(request) == tid
    assert new_id("ev").startswith("ev_") and len(new_id("ev")) == 17  # 84 bits, base64url


def test_event_ids_stay_distinct_across_refills_of_the_pool() -> None:
    made = [new_id("ev") for _ in range(3000)]  # about ten pools of 4 KB
    assert len(set(made)) == len(made)
    assert all(len(m) == 17 and m[3:].replace("-", "").replace("_", "").isalnum() for m in made)


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    ids.random_hex(4)  # the parent's buffer is filled before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, " ".join(ids.random_hex(10) for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {ids.random_hex(10) for _ in range(50)}
    assert len(child) == 50
    assert not child & parent


def test_a_forked_child_makes_other_event_ids_than_its_parent() -> None:
    new_id("ev")  # the parent's ids are cut before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, " ".join(new_id("ev") for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_id("ev") for _ in range(50)}
    assert len(child) == 50
    assert not child & parent
