"""The networks, built from the layers: VGG19 (`vgg.py`), the fixed feature extractor whose responses
define the losses, and the image transformation network of feed-forward style transfer
(`transform.py`), trained with those losses to stylize a photo in one pass."""
