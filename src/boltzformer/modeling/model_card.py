"""The model card, `README.md`, that `save_pretrained` writes beside a checkpoint: the Hub's
metadata header (library, tags, license, pipeline) and a body saying what the model is, what
it answers (its vocabulary), what it was trained on and what it measured, and how to load it.

What the model knows (its config) each model class describes (`ModelDescription`); what it
cannot know (its training data, its measured figures, its Hub id) comes as `CardFacts`, and
is said to be unknown when not given: nothing is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CARD_FILE = "README.md"
TAGS: tuple[str, ...] = (
    "boltzformer", "image-segmentation", "medical-imaging", "text-prompted-segmentation",
    "small-object-segmentation", "safetensors",
)
_UNKNOWN_TRAINING = (
    "Not recorded with this checkpoint: the data, steps and time it was trained with were not "
    "given when this card was written."
)
_UNKNOWN_FIGURES = (
    "No evaluation figures were given when this card was written, so none are stated here. "
    "Measure it on your own data before relying on it: `boltzformer evaluate --checkpoint "
    "{ref} --data DATA --split test --out REPORT` (Dice per target and object size)."
)


@dataclass(frozen=True)
class ModelDescription:
    """What a model says about itself. kind: its name ("BoltzFormer"); summary: one
    paragraph; settings: (name, value) rows; vocabulary: the target names it knows; closed:
    whether it answers only those (a labels or per-target model) or free text; python: the
    loading example, with `{ref}` where the checkpoint's id or folder goes and `{prompt}` an
    example prompt; cli: whether the
    `boltzformer` verbs load it."""

    kind: str
    summary: str
    settings: tuple[tuple[str, str], ...]
    vocabulary: tuple[str, ...]
    closed: bool
    python: str
    cli: bool


@dataclass(frozen=True)
class CardFacts:
    """What a model cannot know about itself; None or empty: unknown, and the card says so.
    repo_id: its Hub id (the loading examples use it); license: an SPDX id or "other";
    trained_on: the training data's name; training: (name, value) rows (steps, minutes, ...);
    figures: (name, value) rows of an evaluation; figures_source: which evaluation."""

    repo_id: str | None = None
    license: str = "mit"
    trained_on: str | None = None
    training: tuple[tuple[str, str], ...] = ()
    figures: tuple[tuple[str, str], ...] = ()
    figures_source: str | None = None


def _table(header: tuple[str, str], rows: tuple[tuple[str, str], ...]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    return lines + [f"| {k} | {v.replace('|', '/')} |" for k, v in rows]


def render_card(model: ModelDescription, facts: CardFacts) -> str:
    """The card's Markdown, metadata header first."""
    ref = facts.repo_id or "path/to/checkpoint"
    prompt = model.vocabulary[0] if model.closed and model.vocabulary else "nodule in lung CT"
    lines = [
        "---", "library_name: boltzformer", f"license: {facts.license}",
        "pipeline_tag: image-segmentation", "tags:", *(f"- {tag}" for tag in TAGS), "---", "",
        f"# {facts.repo_id or model.kind}", "", model.summary, "",
        "## Model", "", *_table(("setting", "value"), model.settings), "",
        "## Vocabulary", "",
    ]
    names = ", ".join(f"`{name}`" for name in model.vocabulary)
    if model.closed:
        lines.append(f"It answers only these {len(model.vocabulary)} target names, one at a "
                     "time (a prompt such as `<target> in <site> <modality>` is read as the "
                     f"target it names): {names}.")
    else:
        lines.append("Open: any text prompt, e.g. `nodule in lung CT`; it answers best the "
                     "phrasing of its training prompts (`<target> in <site> <modality>`).")
        if model.vocabulary:
            lines.append(f"Targets it was calibrated for: {names}.")
    lines += ["", "## Training", ""]
    if facts.trained_on or facts.training:
        rows = ((("data", facts.trained_on),) if facts.trained_on else ()) + facts.training
        lines += _table(("run", "value"), rows)
    else:
        lines.append(_UNKNOWN_TRAINING)
    lines += ["", "## Evaluation", ""]
    if facts.figures:
        if facts.figures_source:
            lines += [facts.figures_source, ""]
        lines += _table(("figure", "value"), facts.figures)
    else:
        lines.append(_UNKNOWN_FIGURES.format(ref=ref))
    lines += ["", "## Use", "", "With the `boltzformer` package installed (from its repository: "
              "`pip install -e .`), in Python:", "",
              "```python", model.python.format(ref=ref, prompt=prompt).rstrip(), "```", ""]
    if model.cli:
        lines += ["or on the command line:", "", "```bash",
                  f"boltzformer predict --checkpoint {ref} --input scan.png \\",
                  f'    --prompt "{prompt}" --out predictions/', "```", ""]
    lines += ["A Hub id is downloaded once into the Hugging Face cache; `HF_HUB_OFFLINE=1` then "
              "loads it from there without the network.", ""]
    return "\n".join(lines)


def write_card(directory: str | Path, model: ModelDescription, facts: CardFacts) -> Path:
    """Write the card into `directory`/README.md; its path."""
    path = Path(directory) / CARD_FILE
    path.write_text(render_card(model, facts), encoding="utf-8")
    return path
