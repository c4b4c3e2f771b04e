"""Groups of tracks that must stay on one side of any split: the artist (or album) of each track.

A dataset's `group` column holds one string per track. A track whose artist the data does not
know is its own group (its id). Artist credits are normalised (case and whitespace), and a
collaboration ("Lauryn Hill and Bob Marley", "Aretha Franklin, Celine Dion & ...") joins the groups
of every artist it names, so no artist crosses a split through a duet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

GROUP_LEVELS = ("artist", "album", "none")  # recipe data.group_by: what a group is
# how a credit names several artists: "A and B", "A, B & C", "A feat. B", "A with B", "A vs. B"
SEPARATORS = re.compile(r"\s*(?:,|&|\band\b|\bfeat\b\.?|\bfeaturing\b|\bft\.|\bwith\b|\bvs\b\.?|\+)\s*", re.IGNORECASE)


def normalise(name: str) -> str:
    """`name` case-folded with runs of whitespace as one space ("Rage Against The  Machine " ->
    "rage against the machine")."""
    return " ".join(name.casefold().split())


def credited_artists(credit: str) -> list[str]:
    """The normalised artist names a credit names (one, or each of a collaboration)."""
    return [part for part in (normalise(piece) for piece in SEPARATORS.split(credit)) if part]


def check_level(dataset: str, group_by: str, known: tuple[str, ...]) -> None:
    """Refuse a `group_by` outside GROUP_LEVELS, or a level the dataset cannot know (`known`)."""
    if group_by not in GROUP_LEVELS:
        raise ValueError(
            f"{dataset}: data.group_by={group_by!r} is not valid; choose one of: {', '.join(GROUP_LEVELS)}"
        )
    if group_by not in (*known, "none"):
        raise ValueError(
            f"{dataset}: data.group_by={group_by!r}: the dataset knows no {group_by} of its "
            f"tracks; choose one of: {', '.join((*known, 'none'))}"
        )


class _Components:
    """Union-find over names."""

    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, name: str) -> str:
        self.parent.setdefault(name, name)
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def join(self, names: list[str]) -> None:
        roots = sorted({self.find(name) for name in names})
        for root in roots[1:]:  # the smallest name stays the root: the group's name
            self.parent[root] = roots[0]


def artist_groups(credits: Mapping[str, str | None]) -> dict[str, str]:
    """Track id -> group: the first name (sorted) of the artists its credit joins, directly or
    through collaborations; the id itself for a blank or missing credit."""
    names = {track: credited_artists(credit or "") for track, credit in credits.items()}
    components = _Components()
    for credited in names.values():
        if credited:
            components.join(credited)
    return {track: components.find(credited[0]) if credited else track for track, credited in names.items()}


def credit_groups(credits: Mapping[str, str | None], level: str) -> dict[str, str]:
    """Track id -> group at `level`: artists joined through collaborations (`artist_groups`), or the
    credit taken whole (`plain_groups`: an album, an id)."""
    return artist_groups(credits) if level == "artist" else plain_groups(credits)


def lone_group(track: str, credit: str | None, level: str) -> str:
    """The group of one track's credit seen alone (a streamed row): the first of the artists it
    names, or the credit whole; the id when blank."""
    if level == "artist":
        return min(credited_artists(credit or ""), default=track)
    return normalise(credit or "") or track


def plain_groups(credits: Mapping[str, str | None]) -> dict[str, str]:
    """Track id -> its normalised credit taken whole (an album, an artist id); the id when blank."""
    return {track: normalise(credit or "") or track for track, credit in credits.items()}
