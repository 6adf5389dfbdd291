"""`boltzformer visualize` as a function: the Boltzmann sampling of every decoder layer for
one prompt on one input file (the paper's Fig. 4), drawn to a figure file."""

from __future__ import annotations

from pathlib import Path

from boltzformer.data.inputs import is_volume, read_gt, read_plane, read_volume
from boltzformer.data.medio import nifti_slices
from boltzformer.inference import viz
from boltzformer.inference.predictor import Predictor
from boltzformer.modeling.text_encoder import check_prompts

FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def visualize_file(
    predictor: Predictor, source: Path, prompt: str, out: Path, *, window: str | None = None,
    axis: int = 2, slice_index: int | None = None, mask: Path | None = None, query: int = 0,
    threshold: float = 0.5,
) -> str:
    """Draw `query`'s sampling per layer for `prompt` on `source` (an image, a DICOM slice, or
    slice `slice_index` along `axis` of a NIfTI volume: the middle one by default), the
    ground truth `mask` outlined when given, into `out`. Returns the line the verb prints;
    bad input is a one-line ValueError."""
    [prompt] = check_prompts([prompt], what="--prompt")
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"--out {out}: give a figure file ending in "
                         f"{', '.join(FIGURE_SUFFIXES)}")
    if is_volume(source):
        slices = nifti_slices(read_volume(source, window, axis).display, axis)
        k = len(slices) // 2 if slice_index is None else slice_index
        if not 0 <= k < len(slices):
            raise ValueError(f"--slice {k} does not exist: axis {axis} has slices "
                             f"0..{len(slices) - 1}")
        image = slices[k]
        title = f'"{prompt}" on {source.name}, slice {k} along axis {axis}'
    else:
        if slice_index is not None:
            raise ValueError("--slice applies to NIfTI volumes only; drop it")
        image = read_plane(source, window)
        title = f'"{prompt}" on {source.name}'
    gt = read_gt(mask, image.shape[:2]) if mask is not None else None
    num_queries = predictor.model.config.num_queries
    if not 0 <= query < num_queries:
        raise ValueError(f"--query {query} does not exist: the model has queries "
                         f"0..{num_queries - 1}")
    predictor.set_image(image)
    trace = predictor.sampling(prompt)
    viz.sampling_figure(image, trace.keep_masks, trace.prob, gt, query=query, path=out,
                        title=title, threshold=threshold)
    return f"wrote {out} ({len(trace.keep_masks)} decoder layers, query {query})"
