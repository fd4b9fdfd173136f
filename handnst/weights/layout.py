"""What a VGG19 weights file holds, and how the network expects its input prepared.

The 16 convolutions of VGG19 by name and channel counts (the network in networks/vgg.py is built from
this table, and every importer and the HDF5 reader check files against it), and the two input
conventions that published weights use.
"""

# (name, in_channels, out_channels) of the 16 3x3 convolutions, in order; a 2x2 pooling follows the
# last convolution of each block (pool1 after conv1_2, ..., pool5 after conv5_4).
CONV_LAYERS = (
    ("conv1_1", 3, 64), ("conv1_2", 64, 64),
    ("conv2_1", 64, 128), ("conv2_2", 128, 128),
    ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv3_4", 256, 256),
    ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv4_4", 512, 512),
    ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512), ("conv5_4", 512, 512),
)
CONV_NAMES = tuple(name for name, _, _ in CONV_LAYERS)
WEIGHT_SHAPES = {name: ((cout, cin, 3, 3), (cout,)) for name, cin, cout in CONV_LAYERS}

KERAS_CONVENTION = {"channel_order": "BGR", "scale": 255.0, "mean": [103.939, 116.779, 123.68], "std": None}
TORCH_CONVENTION = {"channel_order": "RGB", "scale": 1.0, "mean": [0.485, 0.456, 0.406],
                    "std": [0.229, 0.224, 0.225]}
