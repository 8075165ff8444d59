"""The pacing margin for arrival jitter: how 429s widen it, how clean running narrows it, what lasts.

The rules are stated in bulkgene/net/pacer.py's docstring; this module keeps their state.
Every method takes the time (the pacer's monotonic clock), so the rules run on any clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

INITIAL_MARGIN_S = 0.025  # one-way delay spread allowed for before any 429: 2.4 % of the ceiling
MARGIN_STEP_S = 0.025
MARGIN_CAP_S = 0.2  # within a run; past it, 429s that keep coming halve the rate instead
REMEMBERED_CAP_S = 0.075  # a lesson wider than this is an episode, not a property of the path
MARGIN_PROVEN_S = 5.0  # a lesson that held this long without a 429 is reported, to be remembered
EPISODE_S = 60.0  # a second bunched 429 this soon after the first makes an episode, not a lesson
EPISODE_NARROW_S = 10.0  # an episode's margin narrows a step after this long without a 429 ...
_EPISODE_NARROW_DOUBLINGS = 5  # ... twice as long after each refuted narrowing, up to 32 times
PROBE_CLEAN_S = 5.0  # a lesson is only tested after this long without a 429 in the run ...
PROBE_AFTER_S = 3600.0  # ... once it is this old, twice as old after each refuted test ...
PROBE_AFTER_MAX_S = 86400.0  # ... but at least once a day
PROBE_HOLD_S = 10.0  # a narrower margin that held this long without a 429 replaces the lesson
_EPSILON_S = 1e-9


@dataclass(frozen=True)
class MarginLesson:
    """What runs learnt about a path's arrival spread: the margin it needs, how many tests of
    a narrower one it refuted in a row, and how long ago it was learnt or last refuted."""

    margin_s: float
    refuted: int = 0
    age_s: float = 0.0


class Widening(Enum):
    """What a bunched 429 did to the margin."""

    LESSON = "a lesson: the path needs one step more"
    EPISODE = "an episode: wider for this run only"
    REFUTED = "the test of a narrower margin failed: back to the lesson"
    OWN_LAG = "our own event loop was late: wider for this run only, nothing learnt"
    AT_CAP = "the margin is at its cap: nothing left to widen"


class ArrivalMargin:
    """The margin the pacer adds to every one-second window, and the lesson behind it."""

    def __init__(self, remembered: MarginLesson, now: float) -> None:
        start_s = min(MARGIN_CAP_S, max(0.0, remembered.margin_s))
        self._floor_s = min(INITIAL_MARGIN_S, start_s)  # narrowing never goes below this
        self._settled_s = start_s  # the lesson: what the path needs, as far as we know
        self._refuted = max(0, remembered.refuted)
        self._dated_at = now - max(0.0, remembered.age_s)
        self._margin_s = start_s  # what the pacer uses now: the lesson, or wider in an episode
        self._reported = self._state()
        self._changed_at = now
        self._quiet_since = now  # the last 429 heard: clean running is counted from here
        self._bunched_at = -math.inf  # the last 429 that widened the margin
        self._lesson_at = -math.inf
        self._before_lesson: tuple[float, int, float] | None = None
        self._narrowed_at = -math.inf
        self._narrowings_refuted = 0
        self._probe_since: float | None = None

    @property
    def margin_s(self) -> float:
        return self._margin_s

    @property
    def settled_s(self) -> float:
        return self._settled_s

    @property
    def probing(self) -> bool:
        return self._probe_since is not None

    def lesson(self, now: float) -> MarginLesson:
        return MarginLesson(self._settled_s, self._refuted, max(0.0, now - self._dated_at))

    def _state(self) -> tuple[float, int, float]:
        return self._settled_s, self._refuted, self._dated_at

    def heard_429(self, now: float) -> None:
        """Any 429: clean running starts again."""
        self._quiet_since = max(self._quiet_since, now)

    def bunched(self, now: float, sent_at: float, *, own_lag: bool = False) -> Widening:
        """A 429, for a request sent at ``sent_at``, that bunched arrivals explain (our sends
        kept within the server's limit); ``own_lag``: our own event loop was late enough
        around the sends to explain it."""
        self.heard_429(now)
        if self._probe_since is not None:
            refutes = sent_at >= self._probe_since and not own_lag
            self._probe_since = None
            self._margin_s = self._settled_s
            if refutes:  # the narrower margin was tested and found wanting
                self._refuted += 1
                self._dated_at = self._changed_at = now
                return Widening.REFUTED
        if self._margin_s + MARGIN_STEP_S > MARGIN_CAP_S + _EPSILON_S:
            return Widening.AT_CAP
        if own_lag:
            self._margin_s = _on_grid(self._margin_s + MARGIN_STEP_S)
            return Widening.OWN_LAG
        in_episode = (self._margin_s > self._settled_s + _EPSILON_S
                      or now - self._bunched_at <= EPISODE_S)
        if not in_episode and self._settled_s + MARGIN_STEP_S <= REMEMBERED_CAP_S + _EPSILON_S:
            self._before_lesson = self._state()
            self._settled_s = _on_grid(self._settled_s + MARGIN_STEP_S)
            self._margin_s = self._settled_s
            self._refuted = 0
            self._dated_at = self._changed_at = self._lesson_at = self._bunched_at = now
            return Widening.LESSON
        if now - self._lesson_at <= EPISODE_S:
            self._doubt_lesson(now)  # the lone 429 that taught it began an episode
        if self._narrowed_at > self._bunched_at:
            self._narrowings_refuted += 1
        self._margin_s = _on_grid(self._margin_s + MARGIN_STEP_S)
        self._bunched_at = now
        return Widening.EPISODE

    def rate_cut(self, now: float) -> None:
        """The rate had to go down: what the margin learnt just before was not the cure."""
        if now - self._lesson_at <= EPISODE_S:
            self._undo_lesson(now)
        if self._probe_since is not None:
            self._probe_since = None
            self._margin_s = max(self._margin_s, self._settled_s)

    def _doubt_lesson(self, now: float) -> None:
        """Keep the lesson (the run narrows back to it), but let the next run try one step
        narrower at once, as if it were old: an episode's first 429 may not be the path's."""
        self._dated_at = min(self._dated_at, now - probe_after_s(self._refuted))
        self._changed_at = now

    def _undo_lesson(self, now: float) -> None:
        if self._before_lesson is not None:
            self._settled_s, self._refuted, self._dated_at = self._before_lesson
            self._before_lesson = None
            self._lesson_at = -math.inf
            self._changed_at = now

    def refresh(self, now: float) -> MarginLesson | None:
        """Narrow after clean running; the lesson to remember, once it has held."""
        if self._probe_since is not None:
            if now - max(self._probe_since, self._quiet_since) >= PROBE_HOLD_S:
                self._probe_since = None
                self._settled_s = self._margin_s  # the lesson's date stays: test on
                self._refuted = 0
                self._changed_at = now
        elif self._margin_s > self._settled_s + _EPSILON_S:
            wait_s = EPISODE_NARROW_S * 2.0 ** min(self._narrowings_refuted,
                                                 _EPISODE_NARROW_DOUBLINGS)
            if now - max(self._quiet_since, self._narrowed_at) >= wait_s:
                if self._narrowed_at > self._bunched_at:  # the last narrowing held
                    self._narrowings_refuted = max(0, self._narrowings_refuted - 1)
                self._margin_s = max(self._settled_s, _on_grid(self._margin_s - MARGIN_STEP_S))
                self._narrowed_at = now
        elif (self._settled_s > self._floor_s + _EPSILON_S
              and now - self._quiet_since >= PROBE_CLEAN_S
              and now - self._dated_at >= probe_after_s(self._refuted)):
            self._margin_s = max(self._floor_s, _on_grid(self._settled_s - MARGIN_STEP_S))
            self._probe_since = now
        state = self._state()
        if state != self._reported and min(now - self._changed_at,
                                           now - self._quiet_since) >= MARGIN_PROVEN_S:
            self._reported = state
            return self.lesson(now)
        return None


def _on_grid(margin_s: float) -> float:
    """``margin_s`` without the float error of adding steps (0.025 * 8 is 0.2, not 0.19999...)."""
    return round(margin_s, 9)


def probe_after_s(refuted: int) -> float:
    """How old a lesson must be before a narrower margin is tried (per refutation, twice)."""
    return min(PROBE_AFTER_MAX_S, PROBE_AFTER_S * 2.0 ** min(refuted, 32))
