"""``node.chainorder``: one bundle order for entries from several logs (proof-format §6.2)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from node.chainorder import causal_order


def check_order(nodes: list[tuple[int, str, str | None]], order: list[int]) -> None:
    """Every node once; each after its predecessor; times never decrease."""
    assert sorted(order) == list(range(len(nodes)))
    placed_at = {nodes[position][1]: rank for rank, position in enumerate(order)}
    for _time, key, prev in nodes:
        if prev is not None:
            assert placed_at[prev] < placed_at[key], (prev, key)
    times = [nodes[position][0] for position in order]
    assert times == sorted(times)


@st.composite
def forests(draw: st.DrawFn) -> list[tuple[int, str, str | None]]:
    """Events of one archive: a main chain with side chains hanging from it, each event dated
    no earlier than the one it follows, presented as several logs concatenated (each log in
    its own order) in any order of logs."""
    count = draw(st.integers(1, 30))
    nodes: list[tuple[int, str, str | None, int]] = []  # (time, key, prev, log)
    for index in range(count):
        if index == 0:
            nodes.append((draw(st.integers(0, 5)), "e0", None, 0))
            continue
        parent = draw(st.integers(0, index - 1))
        time = nodes[parent][0] + draw(st.integers(0, 3))
        log = draw(st.integers(0, 2))
        nodes.append((time, f"e{index}", f"e{parent}", log))
    logs = draw(st.permutations([0, 1, 2]))
    presented: list[tuple[int, str, str | None]] = []
    for log in logs:
        # one log's entries in that log's order: by time, then by creation
        own = sorted((n for n in nodes if n[3] == log), key=lambda n: (n[0], int(n[1][1:])))
        presented.extend((time, key, prev) for time, key, prev, _ in own)
    return presented


@settings(max_examples=300, deadline=None)
@given(forests())
def test_any_set_of_logs_comes_out_in_chain_order(nodes: list[tuple[int, str, str | None]]) -> None:
    check_order(nodes, causal_order(nodes))


def test_a_grantees_older_reads_go_between_the_custodians_events() -> None:
    """The case found by an independent verifier: B's read under A's grant (time 3) came after
    A's offer (time 5) when B's log followed A's."""
    a_log = [
        (1, "create", None),
        (2, "grant", "create"),
        (4, "a_read", "grant"),
        (5, "offer", "a_read"),
    ]
    b_log = [(3, "b_read", "grant"), (6, "accept", "offer")]
    nodes = a_log + b_log
    order = [nodes[p][1] for p in causal_order(nodes)]
    assert order == ["create", "grant", "b_read", "a_read", "offer", "accept"]


def test_equal_times_keep_the_given_order_and_never_precede_a_predecessor() -> None:
    nodes = [(1, "x", None), (1, "y", "x"), (1, "z", "x"), (1, "w", "y")]
    reversed_nodes = list(reversed(nodes))
    assert [nodes[p][1] for p in causal_order(nodes)] == ["x", "y", "z", "w"]
    order = [reversed_nodes[p][1] for p in causal_order(reversed_nodes)]
    assert order.index("x") == 0
    assert order.index("y") < order.index("w")


def test_an_unknown_predecessor_starts_a_chain_and_a_cycle_loses_nothing() -> None:
    nodes = [(2, "b", "missing"), (1, "a", None)]
    assert causal_order(nodes) == [1, 0]
    cycle = [(1, "p", "q"), (1, "q", "p"), (0, "r", None)]
    assert causal_order(cycle) == [2, 0, 1]


def test_a_shuffled_presentation_still_comes_out_valid() -> None:
    rng = random.Random(7)
    nodes: list[tuple[int, str, str | None]] = [(0, "n0", None)]
    for index in range(1, 200):
        parent = rng.randrange(index)
        nodes.append((nodes[parent][0] + rng.randrange(3), f"n{index}", f"n{parent}"))
    rng.shuffle(nodes)
    check_order(nodes, causal_order(nodes))
