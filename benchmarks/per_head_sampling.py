"""What `sampling_per_head` changes: the share of the token grid attended per layer, and the
attention work, with one draw per query (the paper, default) against one per query and head
(the authors' release). docs/fidelity.md reports its output.

    python benchmarks/per_head_sampling.py               # paper-hiera-s decoder, random weights
    python benchmarks/per_head_sampling.py --checkpoint RUN/best --data DIR  # a trained model

Random weights: the decoder alone at the paper's size (hidden 512, 101 queries, 8 heads, 9
layers, levels 32², 64², 128², S 256²) on random features and text. A checkpoint: the whole
model on test images of a BiomedParse folder. Per layer it prints the share of the grid a
query attends to with one shared draw, each head's share and the union over heads with
per-head draws; then the attended (query, head, token) triples of all layers as a share of
full attention's, which is the work of the scores and weighted sums (the sparse path's cost,
`attention.attention_macs`); the dense path does full attention's work in every mode.
"""

from __future__ import annotations

import argparse

import torch

from boltzformer.data import BiomedParseDataset
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.modeling.config import get_preset
from boltzformer.modeling.mask_decoder import BoltzFormerDecoder


@torch.no_grad()
def keep_masks(per_head: bool, args: argparse.Namespace) -> tuple[list[torch.Tensor], int]:
    """Every layer's keep masks, (B, Q, n) or (B, heads, Q, n), and the number of heads."""
    g = torch.Generator().manual_seed(args.seed)
    if args.checkpoint:
        model = BoltzFormer.from_pretrained(args.checkpoint, sampling_per_head=per_head).eval()
        data = BiomedParseDataset(args.data, "test", image_size=model.config.image_size,
                                  train=False)
        items = [data[i] for i in range(args.images)]
        images = torch.stack([it["image"] for it in items])
        features = model.encode_image(images)
        text = model.encode_text([it["prompt"] for it in items])
        decoder, levels, semantic = model.decoder, features.levels, features.semantic
        tokens, padding = text.tokens, text.padding
    else:
        torch.manual_seed(args.seed)
        cfg = get_preset("paper-hiera-s", sampling_per_head=per_head)
        decoder = BoltzFormerDecoder.from_config(cfg).eval()
        d, side = cfg.hidden_dim, cfg.image_size // 4
        levels = [torch.randn(args.images, d, side // s, side // s, generator=g)
                  for s in (8, 4, 2)]
        semantic = torch.randn(args.images, cfg.mask_dim, side, side, generator=g)
        tokens = torch.randn(args.images, 6, d, generator=g)
        padding = torch.zeros(args.images, 6, dtype=torch.bool)
    masks: list[torch.Tensor] = []
    originals = decoder._keep

    def recording_keep(logits, layer, generator):
        keep = originals(logits, layer, generator)
        masks.append(keep)
        return keep

    decoder._keep = recording_keep
    decoder(levels, semantic, tokens, padding, generator=torch.Generator().manual_seed(args.seed))
    return masks, decoder.cross[0].attn.num_heads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: random weights)")
    parser.add_argument("--data", help="BiomedParse folder whose test split feeds the model")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.checkpoint and not args.data:
        parser.error("--checkpoint needs --data")
    shared, heads = keep_masks(False, args)
    per_head, _ = keep_masks(True, args)
    print("| layer | grid | one draw per query: share | per head: each head | per head: union "
          "over heads |")
    print("|---|---|---|---|---|")
    full = attended_shared = attended_heads = 0
    for layer, (a, b) in enumerate(zip(shared, per_head)):
        n = a.shape[-1]
        side = int(n**0.5)
        print(f"| {layer} | {side}² | {100 * a.float().mean():.1f} % | "
              f"{100 * b.float().mean():.1f} % | {100 * b.any(1).float().mean():.1f} % |")
        full += a.numel() * heads
        attended_shared += int(a.sum()) * heads
        attended_heads += int(b.sum())
    print(f"\nattended (query, head, token) triples, share of full attention's: one draw per "
          f"query {100 * attended_shared / full:.1f} %, "
          f"per head {100 * attended_heads / full:.1f} %")

if __name__ == "__main__":
    main()

