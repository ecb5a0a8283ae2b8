"""One state machine for every kind of record: its moves, final states, refusal, paths, SQL check.

Incidents, problems, service requests and access grants each declare a `StateMachine` in their
rules module. Refusing an illegal move, finding the shortest legal path between two states and
the CHECK constraint on the store's state column all come from that one declaration, so they
cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from opsflow.errors import PermanentError

S = TypeVar("S", bound=str)


class IllegalTransitionError(PermanentError, ValueError):
    """A record was asked to move to a state its state machine does not allow from here.

    Attributes:
        kind: the kind of record ("incident", "service request", ...).
        record: how the message names the record (its number, or the kind).
        current: the state it is in.
        target: the state it was asked to reach.
        allowed: the states it may move to from `current`.
    """

    def __init__(
        self,
        kind: str,
        record: str,
        current: str,
        target: str,
        allowed: tuple[str, ...],
        message: str | None = None,
    ) -> None:
        self.kind = kind
        self.record = record
        self.current = current
        self.target = target
        self.allowed = allowed
        if message is None:
            moves = ", ".join(allowed) or "none, it is final"
            message = (
                f"{record} cannot go from {current} to {target}; allowed from {current}: {moves}"
            )
        super().__init__(message)


class InvalidUpdateError(PermanentError, ValueError):
    """An update lacks a field its target state needs, or sets one that state does not take."""

    def __init__(self, field: str, cause: str) -> None:
        self.field = field
        self.cause = cause
        super().__init__(f"{field}: {cause}")


@dataclass(frozen=True)
class StateMachine(Generic[S]):
    """The states of one kind of record and the legal moves between them.

    Args:
        kind: the kind of record, as messages name it ("incident", "access grant").
        transitions: every state, in order, with the states it may move to; a state with no
            moves is final.
    """

    kind: str
    transitions: Mapping[S, tuple[S, ...]]

    def __post_init__(self) -> None:
        unknown = {s for moves in self.transitions.values() for s in moves} - set(self.states)
        if unknown:
            raise ValueError(f"{self.kind}: moves to undeclared states {sorted(unknown)}")

    @property
    def states(self) -> tuple[S, ...]:
        """Every state, in the declared order."""
        return tuple(self.transitions)

    @property
    def final(self) -> tuple[S, ...]:
        """The states a record never leaves."""
        return tuple(state for state, moves in self.transitions.items() if not moves)

    def allowed(self, current: S) -> tuple[S, ...]:
        """The states a record may move to from `current`."""
        return self.transitions.get(current, ())

    def check(self, current: S, target: S, record: str | None = None) -> None:
        """Refuse a move this machine does not allow, naming the record, both states and the
        legal moves.

        Raises:
            IllegalTransitionError: `target` is not a legal move from `current`.
        """
        if target not in self.allowed(current):
            raise self.refusal(current, target, record)

    def refusal(
        self, current: S, target: S, record: str | None = None, message: str | None = None
    ) -> IllegalTransitionError:
        """The error refusing a move from `current` to `target` (`message` to say more)."""
        name = record or self.kind
        return IllegalTransitionError(
            self.kind, name, current, target, self.allowed(current), message
        )

    def refuse_final_change(
        self, current: S, target: S, record: str | None = None
    ) -> IllegalTransitionError:
        """The error refusing any change to a record in a final state."""
        name = record or self.kind
        return self.refusal(
            current, target, record, f"{name} is {current}, a final state; it cannot be changed"
        )

    def kept_final(self, record: Any, target: S, changes: Mapping[str, object]) -> bool:
        """Whether `record` (with a `state`) is in a final state and stays as it is: asked
        for no other state and no field `changes` that differ from its own.

        Raises:
            IllegalTransitionError: a record in a final state was asked to leave it, or to
                change a field.
        """
        if record.state not in self.final:
            return False
        if target != record.state:
            self.check(record.state, target)
        if any(getattr(record, name) != value for name, value in changes.items()):
            raise self.refuse_final_change(record.state, target)
        return True

    def path(self, current: S, target: S, record: str | None = None) -> list[S]:
        """The shortest chain of legal moves from `current` to `target` (empty when there).

        Raises:
            IllegalTransitionError: no chain of legal moves leads there.
        """
        frontier: list[list[S]] = [[current]]
        seen = {current}
        while frontier:
            path = frontier.pop(0)
            if path[-1] == target:
                return path[1:]
            for step in self.allowed(path[-1]):
                if step not in seen:
                    seen.add(step)
                    frontier.append([*path, step])
        raise self.refusal(current, target, record)

    def sql_check(self, column: str = "state") -> str:
        """The SQL condition that `column` holds one of these states, for a CHECK constraint."""
        return f"{column} IN ({', '.join(_sql_string(state) for state in self.states)})"


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
