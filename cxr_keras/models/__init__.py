"""Models: the backbone registry, the model factory, fine-tuning stages and the baseline CNN."""
