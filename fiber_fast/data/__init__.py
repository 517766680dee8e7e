"""Data for fiber-fast: readers, the synthetic set, transforms, tokenisation, collate, samplers, loaders."""
