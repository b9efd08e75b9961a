"""The data layer: find images (sources), split them (splits), feed them to Keras (pipeline)."""
