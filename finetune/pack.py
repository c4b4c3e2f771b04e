"""`python -m finetune pack`: a recipe's dataset as Parquet shards that `data.name=hub` trains from.

Each split becomes `data/<split>-<i>-of-<n>.parquet` files of about `shard_mb` MB: an `audio`
column (FLAC bytes at the model's sample rate, mono, 16-bit: lossless from there on), `label`
(ClassLabel) or `labels` (tags), `id` and `duration`, with the `datasets` features in the Parquet
metadata, plus a dataset card (README.md). The destination is a folder, an fsspec URL (`s3://`,
`gs://`, `file://` ...; the shards are written locally first, then copied) or a Hub dataset repo
(`hf://datasets/user/name`, uploaded with huggingface_hub). Files that cannot be read are left out
and reported, like everywhere else.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import fsspec
import soundfile as sf
from datasets import Audio, Dataset, Features, Value

from finetune.atomic import removed_on_failure, staged_folder
from finetune.clips import task_of
from finetune.console import progress
from finetune.data.audio import AudioReadError, read_window
from finetune.data.common import SPLITS, report, split_features
from finetune.data.hub import HUB_PREFIX
from finetune.data.recipe_data import recipe_dataset
from finetune.export import check_push, push_to_hub
from finetune.models import build_model
from finetune.published import split_key
from finetune.recipe import Recipe, RecipeError

AUDIO_STORAGE = {"bytes": Value("binary"), "path": Value("string")}  # Audio(decode=False)'s Arrow storage


def flac_bytes(path: str, sample_rate: int) -> tuple[bytes, float]:
    """The whole track at `sample_rate`, mono, as 16-bit FLAC bytes, and its duration in seconds."""
    y = read_window(path, sample_rate)  # (T,)
    buffer = io.BytesIO()
    sf.write(buffer, y, sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue(), len(y) / sample_rate


def known_group(row: dict) -> str:
    """A track's group as the packed column holds it: '' where the data named none (the group is the id)."""
    return "" if row["group"] == row["id"] else row["group"]


def shard_rows(split, sample_rate: int, shard_bytes: int, name: str, group_column: str | None = None):
    """Lists of packed rows of `split`, each list about `shard_bytes` of audio (with each track's
    group as `group_column`, when given); unreadable files are left out and reported."""
    target = "labels" if "labels" in split.features else "label"
    groups = [group_column] if group_column else []
    rows, size, unreadable = [], 0, []
    for row in progress(split, f"packing {name}", len(split), "tracks"):
        try:
            data, duration = flac_bytes(row["audio"]["path"], sample_rate)
        except AudioReadError as err:
            unreadable.append(f"{row['audio']['path']} ({err.cause})")
            continue
        rows.append(
            {
                "id": row["id"],
                "audio": {"bytes": data, "path": f"{Path(row['id']).name}.flac"},
                target: row[target],
                "duration": duration,
                **{k: known_group(row) for k in groups},
            }
        )
        size += len(data)
        if size >= shard_bytes:
            yield rows
            rows, size = [], 0
    report("pack", f"unreadable {name} files", unreadable)
    if rows:
        yield rows


def write_split(
    split,
    name: str,
    folder: Path,
    features: Features,
    sample_rate: int,
    shard_mb: float,
    group_column: str | None = None,
) -> int:
    """`folder/data/<name>-<i>-of-<n>.parquet` for one split; returns the number of rows written.
    The audio column is built as plain {bytes, path} structs and cast to Audio as a table (no
    torchcodec), so the Parquet metadata declares the Audio feature."""
    written = []
    for index, rows in enumerate(shard_rows(split, sample_rate, int(shard_mb * 2**20), name, group_column)):
        part = folder / "data" / f"{name}-{index:05d}.parquet.tmp"
        table = Dataset.from_list(rows, features=features).cast_column("audio", Audio(decode=False))
        table.to_parquet(str(part))
        written.append((part, len(rows)))
    for index, (part, _) in enumerate(written):
        part.rename(part.parent / f"{name}-{index:05d}-of-{len(written):05d}.parquet")
    return sum(count for _, count in written)


def dataset_card(
    recipe: Recipe, label_names: list[str], multi_label: bool, sample_rate: int, counts: dict[str, int]
) -> str:
    """README.md of a packed dataset: its metadata, what it holds and how to train from it."""
    size = sum(counts.values())
    category = (
        "n<1K" if size < 1000 else "1K<n<10K" if size < 10_000 else "10K<n<100K" if size < 100_000 else "100K<n<1M"
    )
    target = "labels (tags, a list of indices)" if multi_label else "label (a class index)"
    return f"""---
task_categories:
- audio-classification
tags:
- audio
- music
- finetune
size_categories:
- {category}
---

# {recipe.data.name} packed by finetune

The `{recipe.data.name}` dataset of the recipe `{recipe.name}` (split `{split_key(recipe)}`), packed by
`python -m finetune pack` into Parquet shards: {", ".join(f"{split} {count} tracks" for split, count in counts.items())}.

- `audio`: the whole track, mono, {sample_rate} Hz, 16-bit FLAC bytes
- `{target}` over {len(label_names)} {"tags" if multi_label else "classes"}: {", ".join(label_names[:20])}{" ..." if len(label_names) > 20 else ""}
- `id`: the track's id in the original dataset; `duration`: seconds{group_line(recipe)}

Train from it (streamed, each process reading its own shards):

```bash
python -m finetune --recipe {recipe.name} data.name=hub data.path=<this dataset>{" data.label_column=labels" if multi_label else ""} data.streaming=true train.max_steps=10000
```

The licence of the audio is the original dataset's.
"""


def group_line(recipe: Recipe) -> str:
    """The dataset card's line on the group column ('' when the recipe groups nothing)."""
    level = recipe.data.group_by
    return (
        ""
        if level == "none"
        else (
            f"\n- `{level}`: each track's {level} group (collaborations joined; the id "
            f"where the source names none): splits and folds keep it on one side"
        )
    )


def write_packed(recipe: Recipe, dataset, folder: Path, shard_mb: float, sample_rate: int) -> None:
    """Every split of `dataset` as shards in `folder`/data, and the dataset card."""
    label_names, multi_label = task_of(dataset["train"])
    # the groups as a column named by their level (artist, album), where the hub loader looks for them
    group_column = recipe.data.group_by if recipe.data.group_by != "none" else None
    grouped = {group_column: Value("string")} if group_column else {}
    features = Features({**split_features(label_names, multi_label), **grouped, "audio": AUDIO_STORAGE})
    (folder / "data").mkdir()
    counts = {
        name: write_split(dataset[name], name, folder, features, sample_rate, shard_mb, group_column) for name in SPLITS
    }
    (folder / "README.md").write_text(dataset_card(recipe, label_names, multi_label, sample_rate, counts))


def pack(recipe: Recipe, destination: str, shard_mb: float = 256.0, sample_rate: int | None = None, api=None) -> str:
    """Write `recipe`'s dataset as Parquet shards to `destination`; returns where they went. A
    local folder is written under a temporary name beside it and renamed at the end, so a failure
    leaves nothing behind. A remote destination is written to a local temporary folder first,
    removed once the copy succeeded (kept, and named in the error, when it did not). `api`: an
    `HfApi` for hf:// destinations."""
    if recipe.data.streaming:
        raise RecipeError("data.streaming: pack reads the indexed splits; use data.streaming=false")
    check_destination(destination, api)
    local = "://" not in destination
    folder = Path(destination).expanduser()
    dataset = recipe_dataset(recipe)
    if sample_rate is None:
        sample_rate = build_model(recipe, *task_of(dataset["train"])).sample_rate
    if local:
        with staged_folder(folder) as staging:
            write_packed(recipe, dataset, staging, shard_mb, sample_rate)
        return str(folder)
    with removed_on_failure(Path(tempfile.mkdtemp(prefix="finetune-pack-"))) as staging:
        write_packed(recipe, dataset, staging, shard_mb, sample_rate)
    copy_out(staging, destination, api)
    shutil.rmtree(staging)
    return destination


def hub_repo(destination: str) -> str:
    """The repo id of a Hub dataset destination (hf://datasets/user/name)."""
    return destination.removeprefix(HUB_PREFIX).strip("/")


def check_destination(destination: str, api=None) -> None:
    """Refuse, before anything is packed, a destination the shards cannot go to: a folder or fsspec
    location that is not empty, a Hub repo that cannot be uploaded to (see `export.check_push`)."""
    if destination.startswith(HUB_PREFIX):
        check_push(hub_repo(destination), "--to", "pack to a folder and upload it later", api)
    elif "://" not in destination:
        folder = Path(destination).expanduser()
        if folder.exists() and any(folder.iterdir()):
            raise FileExistsError(f"pack: {folder} is not empty; choose a new folder")
    else:
        filesystem, root = fsspec.core.url_to_fs(destination)
        if filesystem.exists(root) and filesystem.ls(root):
            raise FileExistsError(f"pack: {destination} is not empty; choose a new location")


def copy_out(folder: Path, destination: str, api=None) -> None:
    """Copy the packed `folder` to a Hub dataset repo (hf://datasets/user/name) or an fsspec URL."""
    if destination.startswith(HUB_PREFIX):
        push_to_hub(
            folder,
            hub_repo(destination),
            api=api,
            repo_type="dataset",
            retry=f"`hf upload --repo-type dataset <user/name> {folder}`",
        )
        return
    filesystem, root = fsspec.core.url_to_fs(destination)
    filesystem.put(f"{folder}/", root, recursive=True)
