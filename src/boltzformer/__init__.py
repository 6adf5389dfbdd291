"""BoltzFormer: Boltzmann attention sampling for text-prompted small-object segmentation."""
