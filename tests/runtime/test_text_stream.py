"""Streamed text: the pieces a stream releases add up to the whole answer, a half-decoded character releases
nothing, and a stop string is never shown, not even its first characters, wherever the tokens split it."""

from __future__ import annotations

from npuctl.runtime.text_stream import TextStream


def streamed(pieces: list[str | None], stop: list[str]) -> tuple[list[str], str, bool]:
    """What a client sees: the piece each token releases, the rest at the end, and whether a stop string ended it."""
    stream = TextStream(lambda token: pieces[token], stop)
    released = [stream.push(token) for token in range(len(pieces))]
    return released, stream.finish(), stream.stopped


def test_without_stop_strings_every_piece_is_released_as_it_comes() -> None:
    released, rest, stopped = streamed(["Hel", "lo", None, " wörld"], [])
    assert released == ["Hel", "lo", "", " wörld"] and rest == "" and not stopped


def test_a_stop_string_split_across_tokens_is_never_shown() -> None:
    released, rest, stopped = streamed(["a E", "N", "D b", "more"], ["END"])
    assert released == ["a ", "", "", ""] and rest == "" and stopped
    assert "".join(released) + rest == "a "


def test_text_held_back_as_a_possible_stop_string_is_released_once_it_is_not_one() -> None:
    released, rest, stopped = streamed(["x E", "N!", "y"], ["END"])
    assert released == ["x ", "EN!", "y"] and rest == "" and not stopped
    held, rest, stopped = streamed(["x E"], ["END", ""])  # the answer ends on a start of a stop string
    assert held == ["x "] and rest == "E" and not stopped


def test_the_earliest_of_several_stop_strings_ends_the_text() -> None:
    released, rest, stopped = streamed(["one\n\nUser: two"], ["User:", "\n\n"])
    assert "".join(released) + rest == "one" and stopped
