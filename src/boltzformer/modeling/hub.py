"""Checkpoints on the Hugging Face Hub: a Hub id (`org/name`) resolved to a checkpoint folder
in the local Hub cache, and a checkpoint folder uploaded to a Hub repository.

A Hub repository of this package holds exactly what `save_pretrained` writes: `config.json`,
`model.safetensors` and the model card `README.md`. Downloads go through
`huggingface_hub.snapshot_download` and its cache (`HF_HUB_CACHE`, or `cache_dir=`), so
`HF_HUB_OFFLINE=1` or `local_files_only=True` load from the cache without the network; the
loaded folder is then checked like any local checkpoint (`modeling/checkpoint.py`). Every
failure is a one-line `CheckpointError` naming the id and the fix.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.utils import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from torch import nn

from boltzformer.modeling.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    write_checkpoint,
)
from boltzformer.modeling.model_card import CARD_FILE, CardFacts, ModelDescription, write_card

#: The files of a checkpoint on the Hub; nothing else is downloaded or uploaded.
HUB_FILES: tuple[str, ...] = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
# `org/name`, optionally `@revision` (a branch, tag or commit): the Hub's own id rules
# (letters, digits, "-", "_", "."; no "--" or ".." and no leading or trailing "-" or ".").
_NAME = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"({_NAME}/{_NAME})(?:@([\w./-]+))?")


class HubUploadError(RuntimeError):
    """An upload that the Hub refused or that could not reach it; one line with the fix."""


def parse_hub_id(text: str) -> tuple[str, str | None] | None:
    """`org/name` or `org/name@revision` -> (repo id, revision or None); None for anything
    else (an absolute or relative path of more or fewer than two parts, a bad name)."""
    match = _HUB_ID.fullmatch(text)
    if match is None or "--" in match[1] or ".." in match[1]:
        return None
    return match[1], match[2]


def is_hub_id(text: str) -> bool:
    """Whether `text` reads as a Hub id (`org/name`, optionally `@revision`)."""
    return parse_hub_id(text) is not None


def model_folder(
    name_or_path: str | Path, *, revision: str | None = None,
    cache_dir: str | Path | None = None, token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """The checkpoint folder that `name_or_path` names: an existing local path, or a `Path`,
    as it is (loading it names any missing file); a string that is not a local path and reads
    as `org/name` (or `org/name@revision`), the Hub repository's snapshot in the cache,
    downloaded first unless offline (`download_checkpoint`)."""
    if isinstance(name_or_path, Path) or Path(name_or_path).exists():
        return Path(name_or_path)
    parsed = parse_hub_id(name_or_path)
    if parsed is None:
        return Path(name_or_path)
    repo_id, at = parsed
    return download_checkpoint(repo_id, revision=revision or at, cache_dir=cache_dir,
                               token=token, local_files_only=local_files_only)


def download_checkpoint(
    repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
    token: str | bool | None = None, local_files_only: bool = False,
) -> Path:
    """The snapshot folder of Hub repository `repo_id` (at `revision`, default main) in the
    Hub cache, holding `HUB_FILES`; downloaded if needed and allowed (not `local_files_only`,
    not HF_HUB_OFFLINE). CheckpointError (one line) when the repository, the revision or
    the cached copy is missing, or the repository is not a checkpoint of this package."""
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    try:
        folder = Path(snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, token=token,
            local_files_only=local_files_only, allow_patterns=list(HUB_FILES),
            library_name="boltzformer",
        ))
    except RevisionNotFoundError:
        raise CheckpointError(
            f"{where}: the Hugging Face Hub repository {repo_id} has no revision "
            f"{revision!r}; give a branch, tag or commit it has"
        ) from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise CheckpointError(
            f"{where}: no such local folder, and no Hugging Face Hub model repository "
            f"{repo_id} that can be read (check the id; for a private one log in with "
            "`hf auth login` or pass a token)"
        ) from None
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{where}: no such local folder, and not in the Hugging Face Hub cache "
            f"({cache_dir or 'HF_HUB_CACHE'}) while the Hub cannot be reached (offline: "
            "HF_HUB_OFFLINE or local_files_only, or no connection); download it once online"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(
            f"{where}: cannot be fetched from the Hugging Face Hub ({first})"
        ) from None
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{where}: the Hugging Face Hub repository has no {' or '.join(missing)}, so it "
            f"is not a boltzformer checkpoint ({CONFIG_FILE} + {WEIGHTS_FILE}, as "
            "save_pretrained and push_to_hub write them)"
        )
    return folder


def upload_checkpoint(
    folder: str | Path, repo_id: str, *, private: bool | None = None,
    revision: str | None = None, token: str | bool | None = None,
    commit_message: str = "Upload boltzformer checkpoint",
) -> str:
    """Upload the `HUB_FILES` of checkpoint `folder` to Hub model repository `repo_id`
    (created if missing, `private` if asked; branch `revision` created if missing); the URL
    of the commit. HubUploadError (one line) when the Hub refuses or cannot be reached."""
    api = HfApi(token=token, library_name="boltzformer")
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo.repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo.repo_id, folder_path=str(folder), revision=revision,
            allow_patterns=list(HUB_FILES), commit_message=commit_message,
        )
    except (HfHubHTTPError, OSError) as err:  # refused, no token, offline, no connection
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise HubUploadError(
            f"cannot upload to the Hugging Face Hub repository {repo_id} ({first}); log in "
            "with `hf auth login` (or set HF_TOKEN) with a token that may write there, online"
        ) from None
    return str(commit.commit_url)


def push_model(
    save: Callable[[Path], Path], repo_id: str, *, private: bool | None = None,
    revision: str | None = None, token: str | bool | None = None,
    commit_message: str = "Upload boltzformer checkpoint",
) -> str:
    """Save a model with `save(folder)` (its `save_pretrained`, card included) into a
    temporary folder and upload it (`upload_checkpoint`); the URL of the commit."""
    if parse_hub_id(repo_id) is None or "@" in repo_id:
        raise ValueError(f"{repo_id!r} is not a Hub repository id: give it as org/name")
    with tempfile.TemporaryDirectory(prefix="boltzformer-hub-") as tmp:
        folder = save(Path(tmp))
        return upload_checkpoint(folder, repo_id, private=private, revision=revision,
                                 token=token, commit_message=commit_message)


class PublishedModel:
    """`save_pretrained` and `push_to_hub` for a model that has a `config` (with `to_json`)
    and says what its card holds (`describe`): BoltzFormer and the U-Net expert alike."""

    COMMIT_MESSAGE = "Upload boltzformer checkpoint"
    config: Any  # the model's config dataclass
    describe: Callable[[Any], ModelDescription]  # its card's description of a config

    def save_pretrained(self, directory: str | Path, *, card: CardFacts | None = None) -> Path:
        """Write `config.json`, `model.safetensors` and the model card `README.md` (with
        `card`'s training and evaluation facts; without them it says they are unknown) into
        `directory`."""
        assert isinstance(self, nn.Module)
        written = write_checkpoint(self, self.config.to_json(), directory)
        write_card(written, self.describe(self.config), card or CardFacts())
        return written

    def push_to_hub(
        self, repo_id: str, *, private: bool | None = None, revision: str | None = None,
        token: str | bool | None = None, card: CardFacts | None = None,
        commit_message: str | None = None,
    ) -> str:
        """Upload this model to the Hugging Face Hub repository `repo_id` (`org/name`,
        created if missing) as `save_pretrained` writes it, card included; the commit URL."""
        facts = CardFacts(repo_id=repo_id) if card is None else replace(card, repo_id=repo_id)
        return push_model(lambda folder: self.save_pretrained(folder, card=facts), repo_id,
                          private=private, revision=revision, token=token,
                          commit_message=commit_message or self.COMMIT_MESSAGE)


