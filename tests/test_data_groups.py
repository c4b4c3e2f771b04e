"""Groups from the data: every loader yields a `group` column, the artist (album) the source files
give, collaborations joined, a track without one its own group; checked against the real files in
../shared/realdata where they exist, and a generated dataset with a planted artist effect."""

import csv
import shutil

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, ClassLabel, Features, Value

from data_fixtures import audio_bytes, write_audio, write_genres, write_metadata, write_parquet_split, write_tracks
from finetune import recipe as recipes
from finetune.data import fma, gtzan, load_dataset, mtat, planted
from finetune.data.folds import unsplittable_classes
from finetune.data.groups import artist_groups, credited_artists
from finetune.data.recipe_data import dataset_arguments, recipe_dataset
from test_data_gtzan import make_gtzan

ONE_ARTIST_GENRES = {"blues", "classical", "reggae", "rock"}  # in the 40 shared clips


def groups_of(dataset) -> dict[str, str]:
    """Track id -> group over every split."""
    return {row["id"]: row["group"] for split in dataset.values() for row in split.select_columns(["id", "group"])}


def test_gtzan_artist_encoding_equals_sturms_index(realdata):
    index = {}
    for line in (realdata / "gtzan" / "artists" / "GTZANindex.txt").read_text(encoding="ascii").splitlines():
        if line.strip() and not line.startswith("##"):
            name, artist, _ = (part.strip() for part in line.split(":::"))
            index[name.removesuffix(".wav")] = artist
    assert len(index) == 1000
    assert gtzan.read_artists() == {track: artist for track, artist in index.items() if artist}
    assert len(gtzan.read_artists()) == 919


def test_collaborations_and_case_variants_join_one_group():
    table = gtzan.artist_group_table()
    assert table["reggae.00087"] == table["reggae.00000"] == table["hiphop.00039"] == "bob marley"  # Lauryn Hill and
    assert table["disco.00047"] == table["disco.00013"]  # Barbra Streisand and Donna Summer
    assert table["pop.00012"] == table["pop.00011"]  # Aretha Franklin, Celine Dion, ... & Gloria Estefan
    assert table["reggae.00093"] == table["reggae.00075"]  # Peter Tosh and Mick Jagger
    assert table["disco.00016"] == table["disco.00056"]  # "Earth, Wind & Fire" / "Earth Wind and Fire"
    assert table["metal.00095"] == table["metal.00096"]  # "...Against the Machine" / "...Against The Machine"
    assert table["blues.00000"] != table["reggae.00000"]
    assert credited_artists(" KC and  The Sunshine Band ") == ["kc", "the sunshine band"]
    assert artist_groups({"a": "X feat. Y", "b": "y", "c": "", "d": None}) == {"a": "x", "b": "x", "c": "c", "d": "d"}


def test_real_gtzan_clips_carry_their_artists(realdata):
    data = gtzan.build(realdata / "gtzan", split_scheme="random")
    groups = groups_of(data)
    assert len(groups) == 40 and all(isinstance(g, str) and g for g in groups.values())
    by_genre = {}
    for track, group in groups.items():
        by_genre.setdefault(track.split("/")[0], set()).add(group)
    assert {genre for genre, found in by_genre.items() if len(found) == 1} == ONE_ARTIST_GENRES
    assert by_genre["blues"] == {"john lee hooker"} and by_genre["reggae"] == {"bob marley"}
    assert by_genre["rock"] == {"morphine"} and by_genre["jazz"] == {"leonard bernstein", "james carter"}
    assert ONE_ARTIST_GENRES <= set(unsplittable_classes(data, 4))
    for name in ONE_ARTIST_GENRES:  # a one-artist genre stays whole in training
        assert all(i.split("/")[0] != name for split in ("validation", "test") for i in data[split]["id"])
    unrelated = gtzan.build(realdata / "gtzan", split_scheme="random", group_by="none")
    assert all(track == group for track, group in groups_of(unrelated).items())


def test_every_split_has_the_group_column_and_unknown_artists_are_their_own(tmp_path):
    make_gtzan(tmp_path, count=100)
    data = gtzan.build(tmp_path)  # the fault-filtered split: published lists, groups beside them
    for split in data.values():
        assert split.features["group"] == Value("string")
    groups = groups_of(data)
    assert groups["classical/classical.00059"] == "classical/classical.00059"  # blank in Sturm's index
    assert groups["reggae/reggae.00001"] == "bob marley"
    streamed = gtzan.build(tmp_path, streaming=True)
    assert streamed["train"].features["group"] == Value("string")
    assert next(iter(streamed["train"]))["group"] == groups[next(iter(streamed["train"]))["id"]]
    with pytest.raises(
        ValueError,
        match=r"gtzan: data.group_by='album': the dataset knows no album of its tracks; "
        r"choose one of: artist, none$",
    ):
        gtzan.build(tmp_path, group_by="album")


def write_clip_info(path, rows):
    """MTAT's clip_info_final.csv: tab-separated, every field double-quoted, as released."""
    header = [
        "clip_id",
        "track_number",
        "title",
        "artist",
        "album",
        "url",
        "segmentStart",
        "segmentEnd",
        "original_url",
        "mp3_path",
    ]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(header)
        for clip_id, artist, album, mp3 in rows:
            writer.writerow(
                [
                    clip_id,
                    "1",
                    "a song",
                    artist,
                    album,
                    "http://magnatune.com/x",
                    "30",
                    "59",
                    "http://magnatune.com/x.mp3",
                    mp3,
                ]
            )


def test_mtat_groups_from_clip_info(mtat_root, tmp_path):
    root = shutil.copytree(mtat_root, tmp_path / "mtat")
    ids = [str(n) for n in range(64)]
    paths = [f"{'0123456789abcdef'[n % 16]}/clip-{n:03d}.mp3" for n in range(64)]
    without = mtat.build(root, tags=7, split_scheme="pons")
    assert all(track == group for track, group in groups_of(without).items())  # no clip_info_final.csv
    artists = {
        n: ("Jade Leary" if n < 20 else "jade leary & Ehren Starks" if n == 20 else "Ehren Starks" if n < 40 else "")
        for n in range(64)
    }
    write_clip_info(root / mtat.CLIP_INFO, [(ids[n], artists[n], f"album {n // 10}", paths[n]) for n in range(60)])
    groups = groups_of(mtat.build(root, tags=7, split_scheme="pons"))
    assert {groups[str(n)] for n in range(40)} == {"ehren starks"}  # joined through clip 20's duet
    assert [groups[str(n)] for n in (45, 61)] == ["45", "61"]  # a blank artist; a clip the file does not list
    albums = groups_of(mtat.build(root, tags=7, split_scheme="pons", group_by="album"))
    assert albums["0"] == albums["9"] == "jade leary / album 0" != albums["10"]
    assert albums["45"] == "album 4"


def test_fma_groups_from_the_artist_ids_of_tracks_csv(realdata, tmp_path):
    """Track 2 of the real release (AWOL, artist 1, album 1) and two tracks by another artist."""
    tracks = {2: ("training", "Hip-Hop", 1, 1), 3: ("training", "Rock", 7, 9), 5: ("test", "Rock", 7, 10)}
    write_tracks(
        tmp_path / "fma_metadata" / "tracks.csv",
        {
            track: {
                ("set", "subset"): "small",
                ("set", "split"): split,
                ("track", "genre_top"): genre,
                ("track", "genres_all"): "[]",
                ("artist", "id"): str(artist),
                ("album", "id"): str(album),
            }
            for track, (split, genre, artist, album) in tracks.items()
        },
    )
    write_genres(tmp_path / "fma_metadata" / "genres.csv", [(21, 0, "Hip-Hop"), (12, 0, "Rock")])
    shutil.copy(realdata / "fma" / "fma_small" / "000" / "000002.mp3", tmp_path / "real.mp3")
    for track in tracks:
        (tmp_path / "fma_small" / "000").mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "real.mp3", tmp_path / "fma_small" / "000" / f"{track:06d}.mp3")
    assert groups_of(fma.build(tmp_path)) == {"000002": "artist 1", "000003": "artist 7", "000005": "artist 7"}
    assert groups_of(fma.build(tmp_path, group_by="album")) == {
        "000002": "album 1",
        "000003": "album 9",
        "000005": "album 10",
    }


def test_folder_groups_from_metadata_and_artist_subfolders(tmp_path):
    rows = []
    for n in range(12):
        write_audio(tmp_path / "meta" / f"{n}.wav", seed=n)
        rows.append((f"{n}.wav", "rock" if n % 2 else "jazz", ["Ann", "Ann & Bo", "bo", ""][n % 4], f"disc {n % 3}"))
    write_metadata(tmp_path / "meta" / "metadata.csv", rows, ("file_name", "label", "artist", "disc"))
    groups = groups_of(load_dataset("folder", tmp_path / "meta"))
    assert {groups[f"{n}.wav"] for n in range(12) if n % 4 != 3} == {"ann"} and groups["3.wav"] == "3.wav"
    discs = groups_of(load_dataset("folder", tmp_path / "meta", group_by="album", group_column="disc"))
    assert discs["0.wav"] == discs["3.wav"] == "disc 0" != discs["1.wav"]
    with pytest.raises(
        ValueError,
        match=r"folder: .*metadata.csv has no column 'singer'; its columns: file_name, "
        r"label, artist, disc \(set data.label_column .*data.group_column",
    ):
        load_dataset("folder", tmp_path / "meta", group_column="singer")
    for n in range(8):  # <class>/<artist>/<album>/ and files right in a class folder
        write_audio(
            tmp_path / "tree" / ("rock" if n < 4 else "jazz") / ("A" if n % 2 else "B") / "x" / f"{n}.wav", seed=n
        )
    write_audio(tmp_path / "tree" / "rock" / "loose.wav", seed=9)
    groups = groups_of(load_dataset("folder", tmp_path / "tree"))
    assert groups["rock/A/x/1.wav"] == groups["jazz/A/x/5.wav"] == "a" and groups["rock/loose.wav"] == "rock/loose.wav"
    assert groups_of(load_dataset("folder", tmp_path / "tree", group_by="album"))["rock/B/x/0.wav"] == "b/x"


def test_hub_groups_from_a_named_column(tmp_path):
    features = Features({"audio": Audio(), "genre": ClassLabel(names=["a", "b"]), "singer": Value("string")})
    write_parquet_split(
        tmp_path / "set" / "data" / "train-00000-of-00001.parquet",
        {
            "audio": [{"bytes": audio_bytes(n, format="FLAC"), "path": f"{n}.flac"} for n in range(9)],
            "genre": [n % 2 for n in range(9)],
            "singer": ["Cy", "Dee", None] * 3,
        },
        features,
    )
    unnamed = load_dataset("hub", None, path=str(tmp_path / "set"), label_column="genre")
    assert all(track == group for track, group in groups_of(unnamed).items())  # no column named artist
    groups = groups_of(
        load_dataset("hub", None, path=str(tmp_path / "set"), label_column="genre", group_column="singer")
    )
    assert [groups[f"train/{n}"] for n in range(3)] == ["cy", "dee", "train/2"]
    with pytest.raises(ValueError, match=r"hub: .* has no column 'artist' \(data.group_column\); its columns"):
        load_dataset("hub", None, path=str(tmp_path / "set"), label_column="genre", group_column="artist")


def test_group_settings_reach_the_builders_from_the_recipe(tmp_path):
    make_gtzan(tmp_path, count=12)

    def recipe(**data):
        return recipes.from_dict({"data": {"name": "gtzan", "root": str(tmp_path), "split_scheme": "random", **data}})

    assert dataset_arguments(recipe())["group_by"] == "artist"
    assert groups_of(recipe_dataset(recipe()))["blues/blues.00003"] == "john lee hooker"
    assert groups_of(recipe_dataset(recipe(group_by="none")))["blues/blues.00003"] == "blues/blues.00003"
    with pytest.raises(recipes.RecipeError, match="data.group_column does not apply to dataset 'gtzan'"):
        dataset_arguments(recipe(group_column="singer"))


def test_the_planted_dataset_groups_tracks_by_artist_and_artists_share_a_timbre(tmp_path):
    data = planted.build(tmp_path)
    rows = [row for split in data.values() for row in split]
    assert len(rows) == len(planted.CLASSES) * planted.ARTISTS_PER_CLASS * planted.TRACKS_PER_ARTIST
    by_artist = {}
    for row in rows:
        by_artist.setdefault(row["group"], set()).add(row["label"])
    assert len(by_artist) == 24 and all(len(labels) == 1 for labels in by_artist.values())
    splits = [set(data[name]["group"]) for name in ("train", "validation", "test")]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    assert all(data[name].features["label"].names == list(planted.CLASSES) for name in data)
    spectra = []  # each track's nearest neighbour by its mean log spectrum is mostly by its own artist
    for row in rows:
        y, rate = sf.read(row["audio"]["path"])
        assert rate == planted.SAMPLE_RATE and len(y) == planted.SAMPLE_RATE * planted.SECONDS
        frames = y[: len(y) // 512 * 512].reshape(-1, 512)
        spectra.append(np.log(np.abs(np.fft.rfft(frames, axis=1)).mean(axis=0) + 1e-6))
    spectra = np.array(spectra) - np.mean(spectra, axis=0)
    distance = ((spectra[:, None] - spectra[None]) ** 2).sum(-1)
    np.fill_diagonal(distance, np.inf)
    same = np.mean([rows[i]["group"] == rows[j]["group"] for i, j in enumerate(distance.argmin(axis=1))])
    assert same > 0.6  # chance: 2 of 71
    assert groups_of(planted.build(tmp_path, group_by="none")).keys() == {row["id"] for row in rows}
