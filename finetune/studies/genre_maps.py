"""Explicit genre mappings between datasets, for cross-dataset evaluation.

A mapping sends each label of the dataset a model was trained on (the source) to one label of the
dataset it is scored on (the target), or to None: no counterpart. Labels a mapping does not list
have no counterpart either (MTAT's instrument and mood tags). Nothing is guessed: source classes
without a counterpart are reported, and target tracks whose class no source class maps to are
left out and counted. Several source labels may share a target (GTZAN rock and metal -> FMA Rock);
their scores are summed (genres) or the largest is kept (tags).

How the pairs below were chosen:
- FMA top-level genres (`genre_top`) follow FMA's own taxonomy, fma_metadata/genres.csv: GTZAN
  metal -> Rock because FMA files Metal under Rock. GTZAN disco and reggae get no counterpart:
  FMA files Disco under Soul-RnB and Reggae under International, umbrella genres holding mostly
  other music. FMA Rock -> GTZAN rock only (a GTZAN metal track has no FMA top genre of its own).
- MTAT tags map by name to the genre of the same name (MTAT's `classic`, `hard rock`, `heavy
  metal`, `rap`, `techno` are spelled-out synonyms or sub-genres of one genre); a name missing from
  the target's label set (e.g. `blues` outside MTAT's top 50) is reported as such.
- A custom mapping is a YAML file `source label: target label` (null for no counterpart).
"""

from __future__ import annotations

from pathlib import Path

import yaml

GTZAN_FMA = {
    "blues": "Blues",
    "classical": "Classical",
    "country": "Country",
    "disco": None,
    "hiphop": "Hip-Hop",
    "jazz": "Jazz",
    "metal": "Rock",
    "pop": "Pop",
    "reggae": None,
    "rock": "Rock",
}
FMA_GTZAN = {
    "Blues": "blues",
    "Classical": "classical",
    "Country": "country",
    "Hip-Hop": "hiphop",
    "Jazz": "jazz",
    "Pop": "pop",
    "Rock": "rock",
}
GTZAN_MTAT = {
    "blues": "blues",
    "classical": "classical",
    "country": "country",
    "disco": "disco",
    "hiphop": "hip hop",
    "jazz": "jazz",
    "metal": "metal",
    "pop": "pop",
    "reggae": "reggae",
    "rock": "rock",
}
MTAT_GTZAN = {
    "blues": "blues",
    "classical": "classical",
    "classic": "classical",
    "country": "country",
    "disco": "disco",
    "hip hop": "hiphop",
    "rap": "hiphop",
    "jazz": "jazz",
    "metal": "metal",
    "heavy metal": "metal",
    "pop": "pop",
    "reggae": "reggae",
    "rock": "rock",
    "hard rock": "rock",
}
FMA_MTAT = {
    "Blues": "blues",
    "Classical": "classical",
    "Country": "country",
    "Electronic": "electronic",
    "Folk": "folk",
    "Hip-Hop": "hip hop",
    "Jazz": "jazz",
    "Pop": "pop",
    "Rock": "rock",
}
MTAT_FMA = {
    "blues": "Blues",
    "classical": "Classical",
    "classic": "Classical",
    "country": "Country",
    "electronic": "Electronic",
    "techno": "Electronic",
    "folk": "Folk",
    "hip hop": "Hip-Hop",
    "rap": "Hip-Hop",
    "jazz": "Jazz",
    "pop": "Pop",
    "rock": "Rock",
    "hard rock": "Rock",
    "metal": "Rock",
    "heavy metal": "Rock",
}

GENRE_MAPS = {
    ("gtzan", "fma"): GTZAN_FMA,
    ("fma", "gtzan"): FMA_GTZAN,
    ("gtzan", "mtat"): GTZAN_MTAT,
    ("mtat", "gtzan"): MTAT_GTZAN,
    ("fma", "mtat"): FMA_MTAT,
    ("mtat", "fma"): MTAT_FMA,
}


def packaged_mapping(source: str, target: str) -> dict[str, str | None]:
    if (source, target) not in GENRE_MAPS:
        pairs = ", ".join(f"{s}->{t}" for s, t in GENRE_MAPS)
        raise ValueError(
            f"no packaged genre mapping from {source} to {target} (packaged: {pairs}); "
            "write one as YAML `source label: target label` and pass --mapping FILE"
        )
    return dict(GENRE_MAPS[source, target])


def load_mapping(path: str | Path) -> dict[str, str | None]:
    """A YAML mapping file: `source label: target label`, null for no counterpart."""
    values = yaml.safe_load(Path(path).read_text())
    if not isinstance(values, dict) or not all(isinstance(v, str) or v is None for v in values.values()):
        raise ValueError(f"{path}: expected a mapping `source label: target label` (or null)")
    return {str(k): v for k, v in values.items()}
