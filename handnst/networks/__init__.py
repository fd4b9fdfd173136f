"""The networks, built from the layers: VGG19 (`vgg.py`), the fixed feature extractor whose responses
define the losses."""
