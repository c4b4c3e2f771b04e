"""Artist leakage of a run's split: how many of its test tracks share a group (an artist, or an album)
with its training tracks. A model tested on artists it trained on scores higher than on new ones (the
artist effect), so every run, table and card states it."""

from __future__ import annotations

KEY = "artist_leakage"  # in metrics.json's test split


def split_groups(split) -> tuple[list[str], list[str]]:
    """(ids, groups) of a split; a split without a `group` column: each track its own group. A
    streamed split (no length) is read row by row, metadata only."""
    if "group" not in (split.column_names or []):
        ids = list(split["id"]) if hasattr(split, "__len__") else [row["id"] for row in split.select_columns(["id"])]
        return ids, ids
    if hasattr(split, "__len__"):
        return list(split["id"]), list(split["group"])
    rows = list(split.select_columns(["id", "group"]))
    return [row["id"] for row in rows], [row["group"] for row in rows]


def leakage(dataset, group_by: str) -> dict:
    """The leak of `dataset`'s test split into its training split: test tracks (and groups) that
    share a group with training, at the level `group_by` (artist, album, none); `groups_known` is
    False when every track is its own group (the data names no artist: a leak cannot be seen)."""
    if "test" not in dataset or "train" not in dataset:
        return {}
    train_ids, train_groups = split_groups(dataset["train"])
    test_ids, test_groups = split_groups(dataset["test"])
    known = group_by != "none" and any(g != i for i, g in zip([*train_ids, *test_ids], [*train_groups, *test_groups]))
    seen = set(train_groups)
    shared = [g for g in test_groups if g in seen]
    found = {
        "group_by": group_by,
        "groups_known": known,
        "test_tracks": len(test_groups),
        "test_tracks_sharing": len(shared),
        "groups_shared": len(set(shared)),
    }
    if "validation" in dataset:  # model selection on artists that trained favours memorising them
        _, validation_groups = split_groups(dataset["validation"])
        found.update(
            validation_tracks=len(validation_groups),
            validation_tracks_sharing=sum(g in seen for g in validation_groups),
        )
    return found


def leakage_text(found: dict | None) -> str:
    """One line for summaries, reports and cards ('' for a run written before it was recorded)."""
    if not found:
        return ""
    level = found["group_by"] if found["group_by"] != "none" else "artist"
    if not found["groups_known"]:
        return (
            f"{level}s: unknown for these tracks (each its own group), so the split cannot be checked "
            f"for the {level} effect"
        )
    shared, total = found["test_tracks_sharing"], found["test_tracks"]
    if shared == 0:
        return f"{level}s: none of the {total} test tracks shares an {level} with training ({level}-disjoint split)"
    return (
        f"{level}s: {shared} of {total} test tracks share an {level} with training ({found['groups_shared']} "
        f"{level}s on both sides): figures are inflated by the {level} effect"
    )


def leak_cell(found: dict | None, split: str = "test") -> str:
    """The leak in a table cell: 'k/N' tracks of `split` sharing a group with training, '?' when
    groups are unknown, '-' when not recorded."""
    if not found or f"{split}_tracks" not in found:
        return "-"
    return f"{found[f'{split}_tracks_sharing']}/{found[f'{split}_tracks']}" if found["groups_known"] else "?"
